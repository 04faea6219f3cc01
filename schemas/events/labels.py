"""Events on ``labels.events``: human labels, label-threshold crossings and pre-annotations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import MAX_BOXES_PER_FRAME, EventData, FrameName, TaskId


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
        description="The boxes themselves, so a replay rebuilds the pre-annotation (empty in "
        "events recorded before the boxes were carried, which hold only their count).",
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
