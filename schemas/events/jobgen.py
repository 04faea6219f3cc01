"""Events on ``jobgen.events``: the annotation jobs cut from a task, then ``task.jobs-ready``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.envelope import CloudEvent
from schemas.events.base import MAX_FRAMES_PER_EVENT, EventData, FrameName, TaskId


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
