"""Events on ``labels.events``: human labels, label-threshold crossings and pre-annotations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import (
    MAX_BOXES_PER_FRAME,
    MAX_FRAMES_PER_EVENT,
    EventData,
    FrameName,
    TaskId,
)


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
    uncertainty: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="How much labeling this frame would teach the model (labeler_assist.quality:"
        " 1 - its best box's score, or its most ambiguous box's closeness to the serving "
        "threshold, whichever is larger, over boxes down to the score floor); None in events "
        "recorded before frames were ranked.",
    )


class RankedFrame(EventData):
    """A frame nobody has labeled, and how informative labeling it would be (higher first)."""

    frame: FrameName
    score: float = Field(ge=0, le=1)


class FramesRankedData(EventData):
    task_id: TaskId
    model_version: int | None = Field(
        ge=1, description="The model that scored the frames; None: no model yet (fallback order)."
    )
    strategy: Literal["uncertainty", "spread"] = Field(
        description="uncertainty: the model's ambiguity over the frame's boxes; spread: before "
        "any model, frames evenly spread over the task's order."
    )
    unlabeled: int = Field(ge=0, description="Frames nobody has labeled yet.")
    frames: list[RankedFrame] = Field(
        max_length=MAX_FRAMES_PER_EVENT, description="The top of the ranking, best first."
    )


MAX_ISSUES_PER_EVENT = 1000
"""Issues one ``labels.issues-found`` lists at most (about 200 bytes each); more checked frames
go in further events."""

IssueKind = Literal["missing", "spurious", "misplaced", "wrong_label"]
"""missing: a confident detection no label matches; spurious: a label no detection supports;
misplaced: a label whose best same-class detection overlaps it with IoU under 0.5; wrong_label:
a confident detection on the label's box with another class."""


class LabelIssue(EventData):
    """A place where a model that never trained on the frame confidently disagrees with it."""

    frame: FrameName
    kind: IssueKind
    box: LabeledBox = Field(
        description="The label in question (spurious, misplaced, wrong_label) or the model's box "
        "no label matches (missing), in pixels."
    )
    suggested: str | None = Field(
        default=None, description="wrong_label: the class the model sees there."
    )
    score: float = Field(ge=0, le=1, description="How likely this is a mistake (higher first).")


class CheckedFrame(EventData):
    """A labeled frame a model checked, and which labels it checked (a fingerprint)."""

    frame: FrameName
    labels_sha256: str = Field(
        pattern=r"^[0-9a-f]{16}$",
        description="Of the frame's boxes as checked; newer labels make the check stale.",
    )


class LabelIssuesFoundData(EventData):
    task_id: TaskId
    model_version: int = Field(ge=1)
    trigger: Literal["model.published", "labels.submitted"]
    checked: list[CheckedFrame] = Field(
        max_length=MAX_FRAMES_PER_EVENT,
        description="Frames checked by a model that did not train on them (one event per at most "
        "this many; a frame without issues is checked and clean).",
    )
    issues: list[LabelIssue] = Field(
        max_length=MAX_ISSUES_PER_EVENT, description="Of the checked frames, most likely first."
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


class FramesRanked(CloudEvent[FramesRankedData]):
    """What to label next was worked out again (after a model was published): the top frames."""

    type: Literal["io.labelloop.frames.ranked.v1"] = "io.labelloop.frames.ranked.v1"


class LabelIssuesFound(CloudEvent[LabelIssuesFoundData]):
    """A model that never trained on some labeled frames checked their labels against its own
    boxes; the issues are where it confidently disagrees."""

    type: Literal["io.labelloop.labels.issues-found.v1"] = "io.labelloop.labels.issues-found.v1"
