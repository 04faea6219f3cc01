"""The event log projection: every project event, per task, in arrival order.

It backs ``GET /api/tasks/{id}/events`` (the audit timeline and its SSE stream, so clients
wait for ``task.jobs-ready`` without polling) and ``labelloop audit``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from labelloop.bulk import found_keys, insert_rows
from schemas.envelope import CloudEvent
from schemas.events import EVENTS_BY_TOPIC
from schemas.topics import Topic


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
    return append_events(session, [event]) == 1


def append_events(session: Session, events: Sequence[CloudEvent[Any]]) -> int:
    """Add the events whose ids are not logged, in order, with one lookup; the caller commits."""
    return len(append_new_events(session, events))


def append_new_events(session: Session, events: Sequence[CloudEvent[Any]]) -> list[CloudEvent[Any]]:
    """:func:`append_events`, returning the events that were new (in order)."""
    known = found_keys(session, EventRecord, "event_id", [event.id for event in events])
    new: list[CloudEvent[Any]] = []
    rows = []
    for event in events:
        if event.id in known:
            continue
        known.add(event.id)
        new.append(event)
        rows.append(
            {
                "event_id": event.id,
                "type": event.type,
                "task_id": event.taskid,
                "subject": event.subject,
                "source": event.source,
                "time": event.time,
                "correlationid": event.correlationid,
                "causationid": event.causationid,
                "document": event.model_dump_json(),
            }
        )
    insert_rows(session, EventRecord, rows)  # one executemany: seq follows the batch's order
    return new


def record_event(session: Session, event: CloudEvent[Any]) -> bool:
    """Append ``event`` unless its id is logged already, and commit; True when it was new."""
    try:
        if not append_event(session, event):
            return False
        session.commit()
    except IntegrityError:  # logged concurrently by another consumer instance
        session.rollback()
        return False
    return True


def record_events(engine: Engine, events: Sequence[CloudEvent[Any]]) -> int:
    """Append the events not logged yet in one transaction; how many were new.

    If another consumer instance logged one of them meanwhile, the batch goes again one by one.
    """
    with Session(engine) as session:
        try:
            added = append_events(session, events)
            session.commit()
            return added
        except IntegrityError:
            session.rollback()
    with Session(engine) as session:
        return sum(record_event(session, event) for event in events)


ADMIN_ONLY_TYPES = frozenset(cls.event_type() for cls in EVENTS_BY_TOPIC[Topic.WEBHOOKS_EVENTS])
"""Event types only admins read on a timeline: their data holds webhook URLs (which often carry
secrets), and the webhooks routes show those to admins only."""


def newest_event(
    session: Session,
    task_ids: frozenset[str] | None,
    *,
    after_seq: int = 0,
    hidden: frozenset[str] = frozenset(),
) -> list[EventRecord]:
    """The newest event after ``after_seq`` of any of ``task_ids`` (None: of every task), as a
    list of at most one: enough to tell a watcher that something changed, and where it was."""
    query = select(EventRecord).where(
        EventRecord.seq > after_seq,  # type: ignore[operator]
        col(EventRecord.task_id).is_not(None),
    )
    if task_ids is not None:
        if not task_ids:
            return []
        query = query.where(col(EventRecord.task_id).in_(sorted(task_ids)))
    if hidden:
        query = query.where(col(EventRecord.type).not_in(hidden))
    return list(session.exec(query.order_by(col(EventRecord.seq).desc()).limit(1)))


def task_events(
    session: Session, task_id: str, *, after_seq: int = 0, hidden: frozenset[str] = frozenset()
) -> list[EventRecord]:
    """The task's events after ``after_seq`` in log order, without the ``hidden`` types."""
    query = select(EventRecord).where(
        EventRecord.task_id == task_id,
        EventRecord.seq > after_seq,  # type: ignore[operator]
    )
    if hidden:
        query = query.where(col(EventRecord.type).not_in(hidden))
    return list(session.exec(query.order_by(EventRecord.seq)))  # type: ignore[arg-type]
