"""Events on ``ingest.events``: what ingest made of each uploaded frame, and when a task's declared
data is in."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import MAX_FRAMES_PER_EVENT, EventData, FrameName, TaskId


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
