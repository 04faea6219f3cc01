"""labeler-assist's tables: its view of jobs and frames (from events), labels, counters,
served models and pre-annotations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from schemas.envelope import utcnow


class AssistJob(SQLModel, table=True):
    """A job as ``job.created`` announced it."""

    __tablename__ = "assist_jobs"

    id: str = Field(primary_key=True, max_length=80)
    task_id: str = Field(index=True, max_length=64)
    frames: list[str] = Field(sa_column=Column(JSON, nullable=False))


class AssistFrame(SQLModel, table=True):
    """A processed frame as ``frame.processed`` announced it: its displayed size (for box
    validation) and the hash ingest validated (a frame is pre-annotated only with those bytes)."""

    __tablename__ = "assist_frames"

    task_id: str = Field(primary_key=True, max_length=64)
    name: str = Field(primary_key=True, max_length=255)
    object_key: str = Field(max_length=1024)
    width: int
    height: int
    sha256: str | None = Field(default=None, max_length=64)


class Annotation(SQLModel, table=True):
    """The current human labels of one frame (the last submission wins)."""

    __tablename__ = "annotations"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    job_id: str = Field(max_length=80)
    boxes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    submitted_by: str = Field(max_length=128)
    updated_at: datetime = Field(default_factory=utcnow)


class LabelCounter(SQLModel, table=True):
    """Frames labeled per task and threshold crossings announced so far."""

    __tablename__ = "label_counters"

    task_id: str = Field(primary_key=True, max_length=64)
    labeled_frames: int = 0
    crossings: int = 0


class ServedModel(SQLModel, table=True):
    """The model version that pre-annotates a task's frames (one per task, never shared)."""

    __tablename__ = "served_models"

    task_id: str = Field(primary_key=True, max_length=64)
    version: int
    onnx_key: str = Field(max_length=1024)
    onnx_sha256: str | None = Field(
        default=None, max_length=64, description="As model.published recorded it; checked on load."
    )
    labels: list[str] = Field(sa_column=Column(JSON, nullable=False))
    trained_frames_key: str | None = Field(
        default=None, max_length=1024, description="The frames it trained on (registry JSON)."
    )
    trained_frames_sha256: str | None = Field(default=None, max_length=64)
    backend: str = Field(max_length=16, description="triton or onnxruntime")
    loaded_at: datetime = Field(default_factory=utcnow)


class Preannotation(SQLModel, table=True):
    """Boxes a model version proposed for a frame."""

    __tablename__ = "preannotations"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    model_version: int = Field(primary_key=True)
    boxes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    backend: str = Field(max_length=16)
    uncertainty: float | None = Field(
        default=None, description="How informative labeling the frame would be (quality)."
    )
    created_at: datetime = Field(default_factory=utcnow)


class LabelCheck(SQLModel, table=True):
    """The newest out-of-sample check of a labeled frame: which labels it checked (their
    fingerprint) and the issues found; stale once the frame's labels change."""

    __tablename__ = "label_checks"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    model_version: int
    labels_sha256: str = Field(max_length=16)
    issues: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    checked_at: datetime = Field(default_factory=utcnow)


class StudioProject(SQLModel, table=True):
    """A Label Studio project connected with labelloop as its ML backend, and its task.

    Not a projection: it holds the project owner's Label Studio token (from ``/setup``), which
    no event may carry, as ``api_tokens`` holds labelloop's; a replay keeps it as it is.
    """

    __tablename__ = "label_studio_projects"

    origin: str = Field(primary_key=True, max_length=255, description="Label Studio's origin.")
    project: int = Field(primary_key=True)
    token: str = Field(max_length=256, description="Never shown by any route.")
    config_xml: str = Field(description="The project's label config, as /setup last sent it.")
    task_id: str | None = Field(default=None, index=True, max_length=64)
    connected_by: str = Field(max_length=128)
    task_params: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="The connection's extra params for its task (label_threshold, ...).",
    )
    synced: bool = Field(default=False, description="Its frames and manifest are uploaded.")
    frames: int = Field(default=0, description="Label Studio tasks that became frames.")
    skipped: list[dict[str, Any]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="Label Studio tasks that did not become frames, each with its reason.",
    )
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StudioPush(SQLModel, table=True):
    """A prediction given to Label Studio (so a redelivered event gives none twice)."""

    __tablename__ = "label_studio_pushes"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    model_version: int = Field(primary_key=True)
    pushed_at: datetime = Field(default_factory=utcnow)
