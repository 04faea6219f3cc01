"""Events on ``trainer.events``: training runs and the model versions they publish or reject."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import EventData, TaskId


class ModelMetrics(EventData):
    map50: float = Field(ge=0, le=1)
    map50_95: float = Field(ge=0, le=1)
    precision: float | None = Field(default=None, ge=0, le=1)
    recall: float | None = Field(default=None, ge=0, le=1)


class EpochMetrics(EventData):
    """One finished epoch as Ultralytics measured it: the mean training losses over the epoch
    and the validation figures after it (at Ultralytics' own confidence, not the serving one),
    so a training curve can be drawn while the run goes on."""

    box_loss: float = Field(ge=0, description="Training loss of box regression (CIoU).")
    cls_loss: float = Field(ge=0, description="Training loss of classification.")
    dfl_loss: float = Field(ge=0, description="Training loss of distribution focal (box edges).")
    precision: float = Field(ge=0, le=1)
    recall: float = Field(ge=0, le=1)
    map50: float = Field(ge=0, le=1)
    map50_95: float = Field(ge=0, le=1)


class TrainingStartedData(EventData):
    task_id: TaskId
    run_id: str
    version: int = Field(ge=1)
    device: str
    epoch: int = Field(default=0, ge=0, description="0 when the run starts, then each epoch done.")
    epochs: int = Field(ge=1)
    metrics: EpochMetrics | None = Field(
        default=None,
        description="The epoch just done (None at epoch 0, and in events from before curves).",
    )


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
    trained_frames_key: str | None = Field(
        default=None,
        description="The registry's JSON list of the frames this version trained on (its "
        "ancestors' are among them: a frame's split never changes); frames outside it are "
        "out of sample, so their labels can be checked. None in events from before it was kept.",
    )
    trained_frames_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


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
