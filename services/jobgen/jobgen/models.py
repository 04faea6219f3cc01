"""jobgen's tables: the jobs of each task, and the frame listings they are cut from."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from schemas.envelope import utcnow


class JobBase(SQLModel):
    id: str = Field(primary_key=True, max_length=80)
    task_id: str = Field(index=True, max_length=64)
    start_frame: int
    stop_frame: int
    frames: list[str] = Field(sa_column=Column(JSON, nullable=False))


class Job(JobBase, table=True):
    __tablename__ = "jobs"

    created_at: datetime = Field(default_factory=utcnow)


class FrameListing(SQLModel, table=True):
    """One ``task.frames-listed`` part, kept until its task's ``task.data-ready`` arrives."""

    __tablename__ = "frame_listings"

    task_id: str = Field(primary_key=True, max_length=64)
    part: int = Field(primary_key=True)
    parts: int
    frames: list[str] = Field(sa_column=Column(JSON, nullable=False))


class JobPublic(JobBase):
    """A job as clients see it: `{"id", "task_id", "start_frame", "stop_frame", "frames"}`."""
