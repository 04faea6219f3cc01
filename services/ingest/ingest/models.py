"""ingest's tables: every frame's outcome and each task's declared manifest, one row an
entry (a 100,000-frame manifest is never loaded whole to check a batch of frames)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from schemas.envelope import utcnow


class FrameBase(SQLModel):
    task_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=255)
    object_key: str = Field(max_length=1024)
    status: str = Field(max_length=16, description="processed or rejected")
    sha256: str | None = Field(default=None, max_length=64)
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    format: str | None = Field(default=None, max_length=16)
    code: str | None = Field(default=None, max_length=32, description="why it was rejected")
    reason: str | None = Field(default=None, max_length=1000)


class Frame(FrameBase, table=True):
    __tablename__ = "frames"

    processed_at: datetime = Field(default_factory=utcnow)


class FramePublic(FrameBase):
    processed_at: datetime


class DeclaredFrame(SQLModel, table=True):
    """One frame a task's manifest declares: at ``position`` in it, with the sha256 the
    uploader declared, if any."""

    __tablename__ = "manifest_entries"
    __table_args__ = (Index("ix_manifest_entries_position", "task_id", "position"),)

    task_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=255)
    position: int
    sha256: str | None = Field(default=None, max_length=64)


class TaskIngest(SQLModel, table=True):
    """Per task: how many frames its manifest declares, and whether ``task.data-ready`` went
    out.

    Every frame's transaction updates this row first, which serialises a task's completion
    check across consumers (a row lock on PostgreSQL, the write lock on SQLite).
    """

    __tablename__ = "task_ingest"

    task_id: str = Field(primary_key=True, max_length=64)
    declared: int | None = None
    """Entries of the manifest (its rows in ``manifest_entries``); None until one is read."""
    manifest_error: str | None = Field(default=None, max_length=1000)
    frames_seen: int = 0
    data_ready_at: datetime | None = None
