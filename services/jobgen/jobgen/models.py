"""jobgen's table: the jobs of each task."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class JobBase(SQLModel):
    id: str = Field(primary_key=True, max_length=80)
    task_id: str = Field(index=True, max_length=64)
    start_frame: int
    stop_frame: int
    frames: list[str] = Field(sa_column=Column(JSON, nullable=False))


class Job(JobBase, table=True):
    __tablename__ = "jobs"

    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobPublic(JobBase):
    """A job as clients see it: `{"id", "task_id", "start_frame", "stop_frame", "frames"}`."""
