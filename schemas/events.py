"""Every labelloop event type: frozen, past-tense, one ``data`` model per type.

A type name ends in its version (``.v1``). A consumer validates against the union of the types
it knows for a topic, so an unknown type or version is refused and goes to the DLQ.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from schemas.envelope import CloudEvent
from schemas.topics import Topic

TaskId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
FrameName = Annotated[str, Field(min_length=1, max_length=255)]
MAX_FRAMES_PER_EVENT = 500
"""Frame names one event lists at most: a job's frames (``job.created``), one part of a task's
listing (``task.frames-listed``), one submission's labeled frames. 500 names of 255
characters stay under Kafka's default 1 MB message limit however they are spelled."""
MAX_BOXES_PER_FRAME = 1000
"""Boxes one frame's labels hold at most."""


class EventData(BaseModel):
    """Base of every event payload: immutable, and strict about unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --- tasks.events -------------------------------------------------------------------------------


class TaskCreatedData(EventData):
    task_id: TaskId
    name: str
    labels: list[str]
    segment_size: int = Field(ge=0)
    overlap: int = Field(ge=0)
    label_threshold: int = Field(ge=1)
    priority: int = Field(ge=0, le=3)
    created_by: str


class TaskCreated(CloudEvent[TaskCreatedData]):
    """A task was created through the API; its frames are expected under its prefix."""

    type: Literal["io.labelloop.task.created.v1"] = "io.labelloop.task.created.v1"


# --- ingest.events ------------------------------------------------------------------------------


class FrameProcessedData(EventData):
    task_id: TaskId
    frame: FrameName
    object_key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    size_bytes: int = Field(gt=0)
    format: str = Field(description="Image format as the decoder names it, e.g. JPEG, PNG.")


FrameRejectCode = Literal[
    "empty",
    "truncated",
    "not_an_image",
    "too_many_pixels",
    "outside_task",
    "unsupported",
    "hash_mismatch",
    "too_large",
    "changed",
]
"""Why a frame was refused; ``changed``: overwritten after its upload was announced."""


class FrameRejectedData(EventData):
    task_id: TaskId
    frame: FrameName
    object_key: str
    code: FrameRejectCode
    reason: str = Field(description="Why, in words a person understands.")


class TaskFramesListedData(EventData):
    task_id: TaskId
    part: int = Field(ge=0, description="0-based; parts follow each other in frame order.")
    parts: int = Field(ge=1, description="How many parts the listing has.")
    frames: list[FrameName] = Field(
        min_length=1,
        max_length=MAX_FRAMES_PER_EVENT,
        description="The next processed frames of the task, in natural sort order.",
    )


class TaskDataReadyData(EventData):
    task_id: TaskId
    frame_count: int = Field(ge=0, description="Processed frames: what jobs are cut from.")
    rejected_count: int = Field(ge=0, description="Frames refused (each has its frame.rejected).")
    parts: int = Field(ge=0, description="``task.frames-listed`` parts just before this event.")


RECOVERED_PER_EVENT = 500
"""Object keys one ``task.objects-recovered`` lists at most (a bigger recovery takes several)."""


class ObjectsRecoveredData(EventData):
    task_id: TaskId
    object_keys: list[str] = Field(
        max_length=RECOVERED_PER_EVENT,
        description="Objects under the task's prefix that no notification had brought.",
    )
    listed: int = Field(ge=0, description="Objects the listing found under the task's prefix.")


class FrameProcessed(CloudEvent[FrameProcessedData]):
    """A frame was downloaded, decoded, validated and recorded."""

    type: Literal["io.labelloop.frame.processed.v1"] = "io.labelloop.frame.processed.v1"


class FrameRejected(CloudEvent[FrameRejectedData]):
    """A frame could not be used; ``data.reason`` says why."""

    type: Literal["io.labelloop.frame.rejected.v1"] = "io.labelloop.frame.rejected.v1"


class ObjectsRecovered(CloudEvent[ObjectsRecoveredData]):
    """ingest's reconciler listed an incomplete task and found objects whose notification was
    lost; each is ingested as a notification would have it, so its ``frame.processed`` or
    ``frame.rejected`` follows (the timeline shows which frames came this way)."""

    type: Literal["io.labelloop.task.objects-recovered.v1"] = (
        "io.labelloop.task.objects-recovered.v1"
    )


class TaskFramesListed(CloudEvent[TaskFramesListedData]):
    """One part of the list of a task's processed frames, emitted with ``task.data-ready`` in
    one transaction, on the same topic and key, just before it: a consumer has every part
    when ``task.data-ready`` arrives. The list comes in parts so that no event outgrows the
    broker at any task size."""

    type: Literal["io.labelloop.task.frames-listed.v1"] = "io.labelloop.task.frames-listed.v1"


class TaskDataReady(CloudEvent[TaskDataReadyData]):
    """Every manifest entry of a task was processed or rejected (emitted once per task); the
    processed frames are in the ``task.frames-listed`` parts before it."""

    type: Literal["io.labelloop.task.data-ready.v1"] = "io.labelloop.task.data-ready.v1"


# --- jobgen.events ------------------------------------------------------------------------------


class JobCreatedData(EventData):
    job_id: str
    task_id: TaskId
    start_frame: int = Field(ge=0)
    stop_frame: int = Field(ge=0, description="Inclusive, like CVAT.")
    frames: list[FrameName] = Field(max_length=MAX_FRAMES_PER_EVENT)


class TaskJobsReadyData(EventData):
    task_id: TaskId
    job_count: int = Field(
        ge=0,
        description="Jobs of the task, each announced by its job.created before this event; "
        "their ids are ``<task_id>-j<index>`` (index from 0, at least four digits).",
    )


class JobCreated(CloudEvent[JobCreatedData]):
    """An annotation job was cut from a task."""

    type: Literal["io.labelloop.job.created.v1"] = "io.labelloop.job.created.v1"


class TaskJobsReady(CloudEvent[TaskJobsReadyData]):
    """Every job of a task exists: clients wait for this instead of polling."""

    type: Literal["io.labelloop.task.jobs-ready.v1"] = "io.labelloop.task.jobs-ready.v1"


# --- labels.events ------------------------------------------------------------------------------


class LabeledBox(EventData):
    """A box in pixels; ``x``/``y`` is the top-left corner."""

    label: str = Field(min_length=1, max_length=64, description="One of the task's labels.")
    x: float = Field(ge=0)
    y: float = Field(ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)


class FrameLabels(EventData):
    frame: FrameName
    boxes: list[LabeledBox] = Field(
        max_length=MAX_BOXES_PER_FRAME,
        description="Empty: the frame was checked and has no object.",
    )


class LabelsSubmittedData(EventData):
    task_id: TaskId
    job_id: str
    annotations: list[FrameLabels]
    submitted_by: str
    labeled_frames: int = Field(ge=0, description="Frames of the task labeled so far.")


class LabelsThresholdReachedData(EventData):
    task_id: TaskId
    labeled_frames: int = Field(ge=0)
    crossing: int = Field(
        ge=1, description="1 for the first `label_threshold` frames, 2 for the next..."
    )
    priority: int = Field(ge=0, le=3, description="The task's priority, P0 (highest) to P3.")


class PredictedBox(EventData):
    """A box a model proposed, in pixels of the original frame, with its confidence."""

    label: str
    x: float
    y: float
    w: float
    h: float
    score: float = Field(ge=0, le=1)


class PreannotationReadyData(EventData):
    task_id: TaskId
    job_id: str | None = None
    frame: FrameName
    model_version: int = Field(ge=1)
    boxes: int = Field(ge=0, description="How many boxes were proposed.")
    predictions: list[PredictedBox] = Field(
        default_factory=list,
        description="The boxes themselves, so a replay rebuilds the pre-annotation (added in "
        "0.2; older events carry only the count).",
    )
    backend: Literal["triton", "onnxruntime"]
    fallback_reason: str | None = Field(
        default=None, description="Why onnxruntime served instead of Triton, when it did."
    )


class LabelsSubmitted(CloudEvent[LabelsSubmittedData]):
    """A person saved annotations for frames of a job."""

    type: Literal["io.labelloop.labels.submitted.v1"] = "io.labelloop.labels.submitted.v1"


class LabelsThresholdReached(CloudEvent[LabelsThresholdReachedData]):
    """Another `label_threshold` frames of a task were labeled: time to retrain."""

    type: Literal["io.labelloop.labels.threshold-reached.v1"] = (
        "io.labelloop.labels.threshold-reached.v1"
    )


class PreannotationReady(CloudEvent[PreannotationReadyData]):
    """A frame was pre-annotated by a model version."""

    type: Literal["io.labelloop.preannotation.ready.v1"] = "io.labelloop.preannotation.ready.v1"


# --- trainer.events -----------------------------------------------------------------------------


class ModelMetrics(EventData):
    map50: float = Field(ge=0, le=1)
    map50_95: float = Field(ge=0, le=1)
    precision: float | None = Field(default=None, ge=0, le=1)
    recall: float | None = Field(default=None, ge=0, le=1)


class TrainingStartedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1)
    device: str
    epoch: int = Field(default=0, ge=0, description="0 when the run starts, then each epoch done.")
    epochs: int = Field(ge=1)


class ModelPublishedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1)
    metrics: ModelMetrics
    onnx_key: str
    onnx_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the ONNX file as the registry wrote it; a copy that differs is "
        "never served. None only in events from before hashes were recorded (never served).",
    )
    weights_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of model.pt as written; the next run warm-starts only from a match.",
    )


class ModelRejectedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1)
    metrics: ModelMetrics
    current_metrics: ModelMetrics | None = None
    reason: str


class TrainingFailedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1)
    error: str = Field(description="A readable cause.")


class TrainingPreemptedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1, description="The version this attempt was training (not kept).")
    epochs_done: int = Field(ge=0, description="Epochs saved in the checkpoint it resumes from.")
    epochs: int = Field(ge=1)
    checkpoint_key: str | None = Field(description="Object key of the checkpoint; None: restart.")
    checkpoint_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the checkpoint as written; resumed from only if it matches.",
    )
    preempted_by: str = Field(description="The run of higher priority that takes its place.")


class TrainingStarted(CloudEvent[TrainingStartedData]):
    """A training run started (epoch 0) or finished another epoch."""

    type: Literal["io.labelloop.training.started.v1"] = "io.labelloop.training.started.v1"


class ModelPublished(CloudEvent[ModelPublishedData]):
    """A model version passed its gate, was exported and registered as the task's current one."""

    type: Literal["io.labelloop.model.published.v1"] = "io.labelloop.model.published.v1"


class ModelRejected(CloudEvent[ModelRejectedData]):
    """A trained version did not beat the current model (or the floor) and was not published."""

    type: Literal["io.labelloop.model.rejected.v1"] = "io.labelloop.model.rejected.v1"


class TrainingFailed(CloudEvent[TrainingFailedData]):
    """A training run failed; ``data.error`` says why."""

    type: Literal["io.labelloop.training.failed.v1"] = "io.labelloop.training.failed.v1"


class TrainingPreempted(CloudEvent[TrainingPreemptedData]):
    """A run was checkpointed and requeued for a more urgent one (aggressive preemption)."""

    type: Literal["io.labelloop.training.preempted.v1"] = "io.labelloop.training.preempted.v1"


# --- webhooks.events ----------------------------------------------------------------------------


class WebhookSubscriptionCreatedData(EventData):
    subscription_id: str
    url: str
    events: list[str]
    task_id: TaskId | None = None
    created_by: str


class WebhookSubscriptionDeletedData(EventData):
    subscription_id: str
    deleted_by: str


class WebhookSubscriptionCreated(CloudEvent[WebhookSubscriptionCreatedData]):
    """A URL was subscribed to event types. Its signing secret is never in an event."""

    type: Literal["io.labelloop.webhook.subscription-created.v1"] = (
        "io.labelloop.webhook.subscription-created.v1"
    )


class WebhookSubscriptionDeleted(CloudEvent[WebhookSubscriptionDeletedData]):
    """A subscription was stopped; its delivery log is kept."""

    type: Literal["io.labelloop.webhook.subscription-deleted.v1"] = (
        "io.labelloop.webhook.subscription-deleted.v1"
    )


EVENTS_BY_TOPIC: dict[Topic, tuple[type[CloudEvent[EventData]], ...]] = {
    Topic.TASKS_EVENTS: (TaskCreated,),  # type: ignore[dict-item]
    Topic.INGEST_EVENTS: (  # type: ignore[dict-item]
        FrameProcessed,
        FrameRejected,
        TaskFramesListed,
        TaskDataReady,
        ObjectsRecovered,
    ),
    Topic.JOBGEN_EVENTS: (JobCreated, TaskJobsReady),  # type: ignore[dict-item]
    Topic.LABELS_EVENTS: (LabelsSubmitted, LabelsThresholdReached, PreannotationReady),  # type: ignore[dict-item]
    Topic.TRAINER_EVENTS: (  # type: ignore[dict-item]
        TrainingStarted,
        ModelPublished,
        ModelRejected,
        TrainingFailed,
        TrainingPreempted,
    ),
    Topic.WEBHOOKS_EVENTS: (WebhookSubscriptionCreated, WebhookSubscriptionDeleted),  # type: ignore[dict-item]
}
"""Which event types each project topic carries (the AsyncAPI document is built from this)."""

EVENT_TYPES: dict[str, type[CloudEvent[EventData]]] = {
    cls.event_type(): cls for classes in EVENTS_BY_TOPIC.values() for cls in classes
}
"""Event classes by their CloudEvents ``type``."""


def event_union(*topics: Topic) -> Any:
    """The type of a message on ``topics``: their event types, discriminated by ``type``.

    A consumer annotates its handler with this, so an unknown type or version fails validation
    and goes to the DLQ.
    """
    classes = tuple(cls for topic in topics for cls in EVENTS_BY_TOPIC[topic])
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="type")]  # noqa: UP007 - runtime tuple


PROJECT_TOPICS: tuple[Topic, ...] = tuple(EVENTS_BY_TOPIC)
"""Topics that carry labelloop's own CloudEvents (every topic but ``storage.objects``)."""
