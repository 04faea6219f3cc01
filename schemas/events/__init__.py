"""Every labelloop event type: frozen, past-tense, one ``data`` model per type.

A type name ends in its version (``.v1``). A consumer validates against the union of the types
it knows for a topic, so an unknown type or version is refused and goes to the DLQ. Each topic's
events live in the module named after its producer (``schemas.events.ingest`` holds what
``ingest.events`` carries); every name is imported from here: ``from schemas.events import X``.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import (
    MAX_BOXES_PER_FRAME,
    MAX_FRAMES_PER_EVENT,
    EventData,
    FrameName,
    TaskId,
)
from schemas.events.ingest import (
    RECOVERED_PER_EVENT,
    FrameProcessed,
    FrameProcessedData,
    FrameRejectCode,
    FrameRejected,
    FrameRejectedData,
    ObjectsRecovered,
    ObjectsRecoveredData,
    TaskDataReady,
    TaskDataReadyData,
    TaskFramesListed,
    TaskFramesListedData,
)
from schemas.events.jobgen import (
    JobCreated,
    JobCreatedData,
    TaskJobsReady,
    TaskJobsReadyData,
)
from schemas.events.labels import (
    MAX_ISSUES_PER_EVENT,
    CheckedFrame,
    FrameLabels,
    FramesRanked,
    FramesRankedData,
    IssueKind,
    LabeledBox,
    LabelIssue,
    LabelIssuesFound,
    LabelIssuesFoundData,
    LabelsSubmitted,
    LabelsSubmittedData,
    LabelsThresholdReached,
    LabelsThresholdReachedData,
    PreannotationReady,
    PreannotationReadyData,
    PredictedBox,
    RankedFrame,
)
from schemas.events.tasks import (
    TaskCreated,
    TaskCreatedData,
)
from schemas.events.trainer import (
    EpochMetrics,
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    ModelRejected,
    ModelRejectedData,
    TrainingFailed,
    TrainingFailedData,
    TrainingPreempted,
    TrainingPreemptedData,
    TrainingStarted,
    TrainingStartedData,
)
from schemas.events.webhooks import (
    WebhookSubscriptionCreated,
    WebhookSubscriptionCreatedData,
    WebhookSubscriptionDeleted,
    WebhookSubscriptionDeletedData,
)
from schemas.topics import Topic

__all__ = [
    "EVENTS_BY_TOPIC",
    "EVENT_TYPES",
    "MAX_BOXES_PER_FRAME",
    "MAX_FRAMES_PER_EVENT",
    "MAX_ISSUES_PER_EVENT",
    "PROJECT_TOPICS",
    "RECOVERED_PER_EVENT",
    "CheckedFrame",
    "EpochMetrics",
    "EventData",
    "FrameLabels",
    "FrameName",
    "FrameProcessed",
    "FrameProcessedData",
    "FrameRejectCode",
    "FrameRejected",
    "FrameRejectedData",
    "FramesRanked",
    "FramesRankedData",
    "IssueKind",
    "JobCreated",
    "JobCreatedData",
    "LabelIssue",
    "LabelIssuesFound",
    "LabelIssuesFoundData",
    "LabeledBox",
    "LabelsSubmitted",
    "LabelsSubmittedData",
    "LabelsThresholdReached",
    "LabelsThresholdReachedData",
    "ModelMetrics",
    "ModelPublished",
    "ModelPublishedData",
    "ModelRejected",
    "ModelRejectedData",
    "ObjectsRecovered",
    "ObjectsRecoveredData",
    "PreannotationReady",
    "PreannotationReadyData",
    "PredictedBox",
    "RankedFrame",
    "TaskCreated",
    "TaskCreatedData",
    "TaskDataReady",
    "TaskDataReadyData",
    "TaskFramesListed",
    "TaskFramesListedData",
    "TaskId",
    "TaskJobsReady",
    "TaskJobsReadyData",
    "TrainingFailed",
    "TrainingFailedData",
    "TrainingPreempted",
    "TrainingPreemptedData",
    "TrainingStarted",
    "TrainingStartedData",
    "WebhookSubscriptionCreated",
    "WebhookSubscriptionCreatedData",
    "WebhookSubscriptionDeleted",
    "WebhookSubscriptionDeletedData",
    "event_union",
]

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
    Topic.LABELS_EVENTS: (  # type: ignore[dict-item]
        LabelsSubmitted,
        LabelsThresholdReached,
        PreannotationReady,
        FramesRanked,
        LabelIssuesFound,
    ),
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
