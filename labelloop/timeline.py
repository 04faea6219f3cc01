"""The event log projection: every project event, per task, in arrival order.

It backs ``GET /api/tasks/{id}/events`` (the audit timeline and its SSE stream, so clients
wait for ``task.jobs-ready`` without polling) and ``labelloop audit``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, select

from schemas.envelope import CloudEvent


class EventRecord(SQLModel, table=True):
    __tablename__ = "event_log"

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    type: str = Field(max_length=128, index=True)
    task_id: str | None = Field(default=None, max_length=64, index=True)
    subject: str | None = Field(default=None, max_length=255)
    source: str = Field(max_length=255)
    time: datetime
    correlationid: str | None = Field(default=None, max_length=64)
    causationid: str | None = Field(default=None, max_length=64)
    document: str = Field(sa_column=Column(Text, nullable=False))


def append_event(session: Session, event: CloudEvent[Any]) -> bool:
    """Add ``event`` to the log unless its id is there; the caller commits."""
    if session.exec(select(EventRecord.seq).where(EventRecord.event_id == event.id)).first():
        return False
    session.add(
        EventRecord(
            event_id=event.id,
            type=event.type,
            task_id=event.taskid,
            subject=event.subject,
            source=event.source,
            time=event.time,
            correlationid=event.correlationid,
            causationid=event.causationid,
            document=event.model_dump_json(),
        )
    )
    return True


def record_event(session: Session, event: CloudEvent[Any]) -> bool:
    """Append ``event`` unless its id is logged already, and commit; True when it was new."""
    if not append_event(session, event):
        return False
    try:
        session.commit()
    except IntegrityError:  # logged concurrently by another consumer instance
        session.rollback()
        return False
    return True


def task_events(session: Session, task_id: str, *, after_seq: int = 0) -> list[EventRecord]:
    return list(
        session.exec(
            select(EventRecord)
            .where(EventRecord.task_id == task_id, EventRecord.seq > after_seq)  # type: ignore[operator]
            .order_by(EventRecord.seq)  # type: ignore[arg-type]
        )
    )
