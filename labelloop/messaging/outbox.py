"""Transactional outbox and processed-message log: state and events never drift apart.

Every change goes through a :class:`UnitOfWork`, one database transaction, opened by
:meth:`Transactions.unit_of_work` (a consumer passes the ids of the messages it handles; a
request passes none). ``uow.record(event)`` is the one call that records an effect: it applies
the event with the projection the transactions are bound to (the service's
:class:`~labelloop.projections.Projection`, the functions a replay uses too) and records it for
the topic its contract names (:func:`schemas.topics.topic_of`), together with the handled
message ids. Only after that commit does the relay (:mod:`labelloop.messaging.relay`) publish
the recorded events to Kafka and mark them sent. So:

* a handler that fails after its writes rolls everything back: no state, no event;
* a redelivered message finds its id already processed and does nothing;
* a crash between commit and publish leaves the event in the outbox, and the next relay pass
  (in this process or after a restart) publishes it. Publishing is at least once; event ids are
  deterministic, so consumers deduplicate on them.

Order: recorded rows are inserted at commit time under a per-key lock held to the commit
(PostgreSQL advisory locks; SQLite has one writer at a time), so one key's (a task's) ``seq``
order is the order its transactions committed, the order the relay publishes them in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Column, LargeBinary, Text, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from labelloop.faults import crash_point
from labelloop.messaging.errors import EventTooLarge
from labelloop.projections import Projection
from schemas.envelope import CloudEvent, utcnow
from schemas.topics import topic_of

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=CloudEvent[Any])
DEFAULT_EVENT_MAX_BYTES = 1_000_000
"""``Settings.event_max_bytes``'s default, for transactions made without settings (tests, tools)."""
KEY_LOCKS = 0x6C6C0001
"""The PostgreSQL advisory lock namespace (the first int of the two-int form) of the per-key
locks; the relay's is :data:`labelloop.messaging.relay.RELAY_LOCK`."""


class OutboxMessage(SQLModel, table=True):
    """An event recorded with a state change, waiting to be published (or already sent)."""

    __tablename__ = "outbox"

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    event_type: str = Field(max_length=128)
    topic: str = Field(max_length=255)
    key: str = Field(max_length=255)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
    published_at: datetime | None = Field(default=None, index=True)
    error: str | None = Field(
        default=None,
        sa_column=Column(Text, nullable=True),
        description="Set when the relay could never publish the record: it was set aside.",
    )


class ProcessedMessage(SQLModel, table=True):
    """A message a consumer has fully handled: the idempotency record."""

    __tablename__ = "processed_messages"

    consumer: str = Field(primary_key=True, max_length=128)
    message_id: str = Field(primary_key=True, max_length=255)
    processed_at: datetime = Field(default_factory=utcnow)


class UnitOfWork:
    """One transaction: its state changes, the events it records, and for a consumer the ids of
    the messages it handled; see the module docstring.

    A consumer opens one as ``with transactions.unit_of_work(consumer, message_id) as uow:`` and
    checks ``uow.already_done``; a batch passes several ids and skips those in ``uow.done``. A
    request opens one without ids.
    """

    def __init__(
        self,
        session: Session,
        projection: Projection | None = None,
        *,
        topic_name: Callable[[str], str] = lambda t: t,
        max_event_bytes: int = DEFAULT_EVENT_MAX_BYTES,
        consumer: str | None = None,
        message_ids: Sequence[str] = (),
    ) -> None:
        if message_ids and consumer is None:
            raise ValueError("handled message ids need the consumer that handled them")
        self.session = session
        self.projection = projection
        self.max_event_bytes = max_event_bytes
        self.consumer = consumer
        self.message_ids = tuple(dict.fromkeys(message_ids))
        self.done = processed_ids(session, consumer, self.message_ids) if consumer else set()
        self.already_done = bool(self.message_ids) and len(self.done) == len(self.message_ids)
        self.recorded = 0
        """Events recorded in this transaction (the relay is woken after its commit)."""
        self._unflushed: list[CloudEvent[Any]] = []
        self._topic_name = topic_name
        self._rows: list[dict[str, Any]] = []

    def record(self, event: CloudEvent[Any], *, key: str | None = None) -> bool:
        """Apply ``event`` to the bound projection and record it for the topic its contract
        names; False if an event with that id was recorded before.

        The key defaults to the event's task id so one task's events stay ordered. Raises
        :class:`~schemas.topics.NoTopicCarries` for a type no topic carries and
        :class:`EventTooLarge` for a body over ``max_event_bytes``, before anything is applied.
        """
        projection = self._projection()
        rows, new = self._rows_for([event], key)
        projection.apply(self.session, event)
        self._keep(rows, new)
        return bool(new)

    def record_all(
        self, events: Sequence[CloudEvent[Any]], *, key: str | None = None
    ) -> list[CloudEvent[Any]]:
        """:meth:`record` for each of ``events`` in order, each run of one batch function applied
        in one call and the outbox looked up once; returns those new to the outbox."""
        projection = self._projection()
        rows, new = self._rows_for(events, key)
        projection.apply_run(self.session, events)
        self._keep(rows, new)
        return new

    def apply_all(self, events: Sequence[CloudEvent[Any]]) -> None:
        """Apply consumed events to the bound projection (nothing is recorded), in order, each
        run of one batch function in one call, as :meth:`record_all` does."""
        self._projection().apply_run(self.session, events)

    def _projection(self) -> Projection:
        if self.projection is None:
            raise RuntimeError(
                "these transactions are bound to no projection: use transactions.bound(PROJECTION)"
            )
        return self.projection

    def _rows_for(
        self, events: Sequence[CloudEvent[Any]], key: str | None
    ) -> tuple[list[dict[str, Any]], list[CloudEvent[Any]]]:
        """The outbox rows of the events not recorded before (in this transaction or earlier)."""
        known = {event.id for event in self._unflushed}  # the flushed ones are in the table
        known.update(
            self.session.exec(
                select(OutboxMessage.event_id).where(
                    col(OutboxMessage.event_id).in_([event.id for event in events])
                )
            )
        )
        new, rows = [], []
        now = utcnow()
        for event in events:
            topic = topic_of(event.type)
            if event.id in known:
                continue
            known.add(event.id)
            payload = event.model_dump_json().encode()
            if len(payload) > self.max_event_bytes:
                raise EventTooLarge(event.type, len(payload), self.max_event_bytes)
            rows.append(
                {
                    "event_id": event.id,
                    "event_type": event.type,
                    "topic": self._topic_name(topic),
                    "key": key or event.taskid or event.subject or event.id,
                    "payload": payload,
                    "headers": json.dumps(ce_headers(event)),
                    "created_at": now,
                }
            )
            new.append(event)
        return rows, new

    def _keep(self, rows: list[dict[str, Any]], new: list[CloudEvent[Any]]) -> None:
        self._rows.extend(rows)
        self._unflushed.extend(new)
        self.recorded += len(new)

    def flush(self) -> None:
        """Insert what was recorded, in order, just before the transaction commits.

        On PostgreSQL each key's advisory lock is taken first (in key order, so two flushes
        never deadlock) and held to the commit: the ``seq`` a key's rows get follows the order
        in which its transactions commit, which is the order the relay publishes. A long
        transaction may flush early to hold fewer events; each call locks its own keys, so one
        that does should record a single key (one task's, as jobgen's cut and ingest's listing).
        """
        if not self._rows:
            return
        bind = self.session.get_bind()
        if bind.dialect.name == "postgresql":
            for key in sorted({row["key"] for row in self._rows}):
                self.session.execute(
                    text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"),
                    {"space": KEY_LOCKS, "key": key},
                )
        self.session.execute(insert(OutboxMessage.__table__), self._rows)  # type: ignore[attr-defined]
        self._rows = []
        self._unflushed = []  # a long transaction holds no more than its last flush's events


def committed_event(session: Session, model: type[EventT], *key: object) -> EventT | None:
    """The event of type ``model`` and natural ``key`` as its producer committed it, or None.

    A producer records an event in the transaction that makes its state, so the outbox holds
    every announced event from the instant anyone could have been told of it (it is read
    here, not only relayed). A route whose own projection has not consumed that event yet
    answers from it instead of "not found": a client can use at once what it was told of.
    """
    payload = session.exec(
        select(OutboxMessage.payload).where(OutboxMessage.event_id == model.id_for(*key))
    ).first()
    return None if payload is None else model.model_validate_json(payload)


def ce_headers(event: CloudEvent[Any]) -> dict[str, str]:
    """Kafka headers that let a consumer route on type without parsing the body."""
    headers = {
        "ce_type": event.type,
        "ce_id": event.id,
        "content-type": "application/cloudevents+json",
    }
    if event.taskid:
        headers["ce_taskid"] = event.taskid
    return headers


def processed_ids(session: Session, consumer: str, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` the consumer has already handled."""
    if not message_ids:
        return set()
    if len(message_ids) == 1:
        found = session.get(ProcessedMessage, (consumer, message_ids[0])) is not None
        return set(message_ids) if found else set()
    return set(
        session.exec(
            select(ProcessedMessage.message_id).where(
                ProcessedMessage.consumer == consumer,
                col(ProcessedMessage.message_id).in_(message_ids),
            )
        )
    )


class Transactions:
    """Opens units of work on one engine, applying one service's projection, and wakes the
    relay after each commit.

    ``labelloop serve`` makes one unbound; each service takes ``transactions.bound(PROJECTION)``
    for its handlers, so what they record is applied to that service's tables alone.
    """

    def __init__(
        self,
        engine: Engine,
        topic_name: Callable[[str], str] = lambda t: t,
        on_commit: Callable[[], None] | None = None,
        max_event_bytes: int = DEFAULT_EVENT_MAX_BYTES,
        *,
        projection: Projection | None = None,
    ) -> None:
        self.engine = engine
        self.topic_name = topic_name
        self.on_commit = on_commit
        self.max_event_bytes = max_event_bytes
        self.projection = projection

    def bound(self, projection: Projection) -> Transactions:
        """The same transactions, applying ``projection`` to what their units of work record."""
        return Transactions(
            self.engine,
            self.topic_name,
            self.on_commit,
            self.max_event_bytes,
            projection=projection,
        )

    def project(
        self, consumer: str, events: Sequence[CloudEvent[Any]], *, autoflush: bool = True
    ) -> None:
        """Apply consumed events to the bound projection and mark them handled, a batch in one
        transaction, each event once (those handled before are skipped): the whole handler of
        a service's view of other services' events.

        ``autoflush=False`` for a projection whose batch functions keep the rows they add and
        so need no flush before each lookup (labeler-assist's views, for speed).
        """
        if not events:
            return
        with self.unit_of_work(consumer, [event.id for event in events]) as uow:
            fresh = {event.id: event for event in events if event.id not in uow.done}
            if autoflush:
                uow.apply_all(list(fresh.values()))
            else:
                with uow.session.no_autoflush:
                    uow.apply_all(list(fresh.values()))

    @contextmanager
    def unit_of_work(
        self, consumer: str | None = None, message_ids: str | Sequence[str] = ()
    ) -> Iterator[UnitOfWork]:
        """One transaction; a consumer's commits with the processed marks of ``message_ids``.

        A request (no consumer) gets the same transaction without marks or crash points.
        """
        ids = [message_ids] if isinstance(message_ids, str) else list(message_ids)
        with Session(self.engine, expire_on_commit=False) as session:
            uow = UnitOfWork(
                session,
                self.projection,
                topic_name=self.topic_name,
                max_event_bytes=self.max_event_bytes,
                consumer=consumer,
                message_ids=ids,
            )
            try:
                yield uow
                if uow.message_ids:
                    marks = [
                        {"consumer": consumer, "message_id": handled, "processed_at": utcnow()}
                        for handled in uow.message_ids
                        if handled not in uow.done
                    ]
                    session.flush()
                    if marks:
                        session.execute(insert(ProcessedMessage.__table__), marks)  # type: ignore[attr-defined]
                uow.flush()
                if consumer is not None:
                    crash_point(f"{consumer}.before-commit")
                session.commit()
                if consumer is not None:
                    crash_point(f"{consumer}.after-commit")
            except IntegrityError:
                # A concurrent delivery of the same messages won the race: nothing to redo.
                session.rollback()
                if (
                    consumer is None
                    or not uow.message_ids
                    or processed_ids(session, consumer, uow.message_ids) != set(uow.message_ids)
                ):
                    raise
                log.info("%s: messages %s were handled concurrently", consumer, ids[:3])
            except BaseException:
                session.rollback()
                raise
        if uow.recorded and self.on_commit is not None:
            self.on_commit()
