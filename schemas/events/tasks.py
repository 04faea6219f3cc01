"""Events on ``tasks.events``: a task's lifecycle, produced by the API."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import EventData, TaskId


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
