"""Tasks: the one record every service reads (segmenting, thresholds, priority, labels).

The API creates a task by recording ``task.created`` (:data:`PROJECTION` applies it), so a
replay can rebuild this table from Kafka alone.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints, field_validator, model_validator
from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel

from labelloop.api import IDENTITY
from labelloop.projections import Projection
from schemas.envelope import utcnow
from schemas.events import MAX_FRAMES_PER_EVENT, TaskCreated, TaskCreatedData

PrintableText = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]*$")]
"""Text without control characters: PostgreSQL refuses NUL in text, and no name needs a tab."""
Label = Annotated[PrintableText, Field(min_length=1, max_length=64)]


class TaskBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    labels: list[str] = Field(sa_column=Column(JSON, nullable=False))
    segment_size: int = Field(
        default=0,
        ge=0,
        le=MAX_FRAMES_PER_EVENT,
        description=f"Frames per job; 0 puts every frame in one job. A job holds at most "
        f"{MAX_FRAMES_PER_EVENT} frames (one event lists them): 0 on a bigger task gives jobs "
        f"of {MAX_FRAMES_PER_EVENT}.",
    )
    overlap: int = Field(
        default=0, ge=0, description="Frames consecutive jobs share, at most segment_size // 2."
    )
    label_threshold: int = Field(
        default=10, ge=1, le=100_000, description="Retrain after every this many labeled frames."
    )
    priority: int = Field(default=2, ge=0, le=3, description="P0 (first) to P3 for retraining.")


class TaskCreate(TaskBase):
    """What a client sends to create a task."""

    name: PrintableText = Field(min_length=1, max_length=200)
    labels: list[Label] = Field(min_length=1, max_length=1000)

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str]) -> list[str]:
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        return labels

    @model_validator(mode="after")
    def _overlap_below_segment(self) -> TaskCreate:
        if self.segment_size and self.overlap > self.segment_size // 2:
            raise ValueError("overlap can be at most segment_size // 2 (CVAT's limit)")
        if not self.segment_size and self.overlap:
            raise ValueError("overlap needs a segment_size (0 means one job, nothing to overlap)")
        return self


class Task(TaskBase, table=True):
    __tablename__ = "tasks"

    id: str = Field(primary_key=True, max_length=64)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    """Indexed: ingest's reconciler looks at the tasks of its horizon every tick."""


class TaskPublic(TaskBase):
    id: str
    created_by: str
    created_at: datetime
    upload_prefix: str = Field(description="Where frames go: `tasks/<id>/data/<name>`.")
    manifest_key: str = Field(description="Where the manifest goes: `tasks/<id>/manifest.json`.")

    @classmethod
    def of(cls, task: Task) -> TaskPublic:
        return cls(
            **task.model_dump(),
            upload_prefix=f"tasks/{task.id}/data/",
            manifest_key=f"tasks/{task.id}/manifest.json",
        )


def new_task_id() -> str:
    return uuid.uuid4().hex


def task_created_event(task: Task) -> TaskCreated:
    return TaskCreated.create(
        TaskCreatedData(
            task_id=task.id,
            name=task.name,
            labels=list(task.labels),
            segment_size=task.segment_size,
            overlap=task.overlap,
            label_threshold=task.label_threshold,
            priority=task.priority,
            created_by=task.created_by,
        ),
        source=IDENTITY.source,
        key=(task.id,),
        taskid=task.id,
    )


def apply_task_created(session: Session, event: TaskCreated) -> Task:
    """The ``tasks`` row ``task.created`` describes (created at the event's time)."""
    task = session.get(Task, event.data.task_id)
    if task is None:
        fields = event.data.model_dump(exclude={"task_id"})
        task = Task(**fields, id=event.data.task_id, created_at=event.time)
        session.add(task)
    return task


PROJECTION = Projection(tables=("tasks",), appliers={TaskCreated: apply_task_created})
