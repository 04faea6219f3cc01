"""What every event payload shares: the base model, the id and name types, the size limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

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
