"""trainer's tables: the persistent run queue, its copy of the labels and of each frame's
validated hash, and model versions with the hashes of their files."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from schemas.envelope import utcnow


class TrainingRequest(SQLModel, table=True):
    """One training run, from queued to done or failed; survives restarts."""

    __tablename__ = "training_requests"

    id: str = Field(primary_key=True, max_length=64)
    task_id: str = Field(index=True, max_length=64)
    priority: int
    status: str = Field(default="queued", index=True, max_length=16)
    enqueued_at: datetime = Field(default_factory=utcnow)
    threshold_event_ids: list[str] = Field(sa_column=Column(JSON, nullable=False))
    first_threshold_at: datetime = Field(description="When the oldest merged event was made.")
    attempts: int = 0
    owner: str | None = Field(default=None, max_length=128, description="host:pid running it")
    started_at: datetime | None = None
    heartbeat_at: datetime | None = Field(
        default=None, description="When the owning trainer last renewed its lease on the run."
    )
    finished_at: datetime | None = None
    version: int | None = None
    device: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, max_length=2000)
    checkpoint_key: str | None = Field(
        default=None, max_length=512, description="A preempted run's last epoch, to resume from."
    )
    checkpoint_sha256: str | None = Field(
        default=None, max_length=64, description="The checkpoint's hash when it was written."
    )
    epochs_done: int = Field(default=0, description="Epochs a preempted run had completed.")
    preemptions: int = Field(default=0, description="Attempts stopped by preemption, not crashes.")
    preempted_by: str | None = Field(
        default=None, max_length=64, description="The run this one is being stopped for."
    )


class TrainingLabel(SQLModel, table=True):
    """The trainer's own copy of each labeled frame (from ``labels.submitted``)."""

    __tablename__ = "training_labels"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    boxes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))


class TrainingFrame(SQLModel, table=True):
    """What ingest validated of a frame (from ``frame.processed``): a run trains on an object
    only if its bytes still have this hash."""

    __tablename__ = "training_frames"

    task_id: str = Field(primary_key=True, max_length=64)
    frame: str = Field(primary_key=True, max_length=255)
    object_key: str = Field(max_length=1024)
    sha256: str = Field(max_length=64)
    width: int = Field(description="Displayed width (EXIF orientation applied), as labeled.")
    height: int


class ModelVersionBase(SQLModel):
    version: int = Field(primary_key=True)
    status: str = Field(max_length=16, description="training, published, rejected, failed, retired")
    metrics: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    current: bool = False


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_versions"

    task_id: str = Field(primary_key=True, max_length=64)
    run_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    onnx_sha256: str | None = Field(default=None, max_length=64)
    weights_sha256: str | None = Field(
        default=None, max_length=64, description="model.pt as registered; checked before reuse."
    )


class ModelVersionPublic(ModelVersionBase):
    """`{"version", "status", "metrics": {"map50", "map50_95", ...}, "current"}`."""
