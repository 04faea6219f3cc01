"""Transactional outbox and processed-message log: state and events never drift apart.

A handler changes state and *records* the events announcing it in the same database
transaction, together with the id of the message it handled. Only after that commit does the
:class:`OutboxRelay` publish the recorded events to Kafka and mark them sent. So:

* a handler that fails after its writes rolls everything back: no state, no event;
* a redelivered message finds its id already processed and does nothing;
* a crash between commit and publish leaves the event in the outbox, and the next relay pass
  (in this process or after a restart) publishes it. Publishing is at least once; event ids are
  deterministic, so consumers deduplicate on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Column, LargeBinary, Text, func, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from labelloop.faults import crash_point
from schemas.envelope import CloudEvent

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=CloudEvent[Any])


def _now() -> datetime:
    return datetime.now(UTC)


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
    created_at: datetime = Field(default_factory=_now)
    published_at: datetime | None = Field(default=None, index=True)


class ProcessedMessage(SQLModel, table=True):
    """A message a consumer has fully handled: the idempotency record."""

    __tablename__ = "processed_messages"

    consumer: str = Field(primary_key=True, max_length=128)
    message_id: str = Field(primary_key=True, max_length=255)
    processed_at: datetime = Field(default_factory=_now)


class Outbox:
    """Records events inside a caller's transaction; see the module docstring."""

    def __init__(self, session: Session, topic_name: Callable[[str], str] = lambda t: t) -> None:
        self.session = session
        self._topic_name = topic_name
        self.recorded: list[CloudEvent[Any]] = []

    def emit(self, event: CloudEvent[Any], topic: str, *, key: str | None = None) -> bool:
        """Record ``event`` for ``topic``; False if an event with that id was recorded before.

        The key defaults to the event's task id so one task's events stay ordered.
        """
        return bool(self.emit_all([event], topic, key=key))

    def emit_all(
        self, events: Sequence[CloudEvent[Any]], topic: str, *, key: str | None = None
    ) -> list[CloudEvent[Any]]:
        """Record each of ``events`` in order with one lookup; returns those new to the outbox."""
        known = {event.id for event in self.recorded}
        known.update(
            self.session.exec(
                select(OutboxMessage.event_id).where(
                    col(OutboxMessage.event_id).in_([event.id for event in events])
                )
            )
        )
        new, rows = [], []
        now = _now()
        for event in events:
            if event.id in known:
                continue
            known.add(event.id)
            rows.append(
                {
                    "event_id": event.id,
                    "event_type": event.type,
                    "topic": self._topic_name(topic),
                    "key": key or event.taskid or event.subject or event.id,
                    "payload": event.model_dump_json().encode(),
                    "headers": json.dumps(ce_headers(event)),
                    "created_at": now,
                }
            )
            new.append(event)
        if rows:  # one multi-row INSERT, in order (seq is commit order within the transaction)
            self.session.execute(insert(OutboxMessage.__table__), rows)  # type: ignore[attr-defined]
            self.recorded.extend(new)
        return new


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


class UnitOfWork:
    """Handled messages: their state changes, events and processed marks, atomically.

    Use as ``with uow_factory(consumer, message_id) as uow:`` and check ``uow.already_done``;
    a batch passes several ids and skips those in ``uow.done``.
    """

    def __init__(
        self, session: Session, outbox: Outbox, consumer: str, message_ids: Sequence[str]
    ) -> None:
        self.session = session
        self.outbox = outbox
        self.consumer = consumer
        self.message_ids = tuple(dict.fromkeys(message_ids))
        self.done = processed_ids(session, consumer, self.message_ids)
        self.already_done = len(self.done) == len(self.message_ids)

    def emit(self, event: CloudEvent[Any], topic: str, *, key: str | None = None) -> bool:
        return self.outbox.emit(event, topic, key=key)

    def emit_all(
        self, events: Sequence[CloudEvent[Any]], topic: str, *, key: str | None = None
    ) -> list[CloudEvent[Any]]:
        return self.outbox.emit_all(events, topic, key=key)


def processed_ids(session: Session, consumer: str, message_ids: Sequence[str]) -> set[str]:
    """Which of ``message_ids`` the consumer has already handled."""
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
    """Opens units of work on one engine and wakes the relay after each commit."""

    def __init__(
        self,
        engine: Engine,
        topic_name: Callable[[str], str] = lambda t: t,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.topic_name = topic_name
        self.on_commit = on_commit

    @contextmanager
    def unit_of_work(self, consumer: str, message_id: str | Sequence[str]) -> Iterator[UnitOfWork]:
        """Run messages' effects in one transaction that commits with their processed marks."""
        ids = [message_id] if isinstance(message_id, str) else list(message_id)
        with Session(self.engine, expire_on_commit=False) as session:
            uow = UnitOfWork(session, Outbox(session, self.topic_name), consumer, ids)
            try:
                yield uow
                marks = [
                    {"consumer": consumer, "message_id": handled, "processed_at": _now()}
                    for handled in uow.message_ids
                    if handled not in uow.done
                ]
                session.flush()
                if marks:
                    session.execute(insert(ProcessedMessage.__table__), marks)  # type: ignore[attr-defined]
                crash_point(f"{consumer}.before-commit")
                session.commit()
                crash_point(f"{consumer}.after-commit")
            except IntegrityError:
                # A concurrent delivery of the same messages won the race: nothing to redo.
                session.rollback()
                if processed_ids(session, consumer, uow.message_ids) != set(uow.message_ids):
                    raise
                log.info("%s: messages %s were handled concurrently", consumer, ids[:3])
            except BaseException:
                session.rollback()
                raise
        if uow.outbox.recorded and self.on_commit is not None:
            self.on_commit()

    @contextmanager
    def session(self) -> Iterator[Outbox]:
        """A transaction for a request (not a message): state changes plus outbox events."""
        with Session(self.engine, expire_on_commit=False) as session:
            outbox = Outbox(session, self.topic_name)
            try:
                yield outbox
                session.commit()
            except BaseException:
                session.rollback()
                raise
        if outbox.recorded and self.on_commit is not None:
            self.on_commit()


Publish = Callable[[bytes, str, str, dict[str, str]], Awaitable[Awaitable[Any]]]
"""publish(payload, topic, key, headers): hands one record to the producer and returns the
awaitable of the broker's acknowledgement, so a batch is sent before any ack is awaited."""


class OutboxRelay:
    """Publishes recorded events in commit order and marks them sent.

    Wakes at once after a local commit (:meth:`wake`) and every ``poll_s`` otherwise, which
    picks up events left behind by a crashed process. On PostgreSQL, rows are claimed with
    ``FOR UPDATE SKIP LOCKED`` so relays in several pods never publish the same row together.
    """

    def __init__(self, engine: Engine, publish: Publish, *, poll_s: float = 0.5, batch: int = 200):
        self.engine = engine
        self.publish = publish
        self.poll_s = poll_s
        self.batch = batch
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published = 0

    def wake(self) -> None:
        """Ask for a pass now; safe to call from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        """Relay until cancelled; a failed publish is retried on the next pass."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                while await self.flush_once():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay pass failed; retrying in %.1fs", self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_s)
            self._wakeup.clear()

    async def flush_once(self) -> int:
        """Publish one batch of pending events; returns how many were sent."""
        with Session(self.engine) as session:
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))  # type: ignore[union-attr]
                .order_by(OutboxMessage.seq)  # type: ignore[arg-type]
                .limit(self.batch)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            # The session's database calls run off the event loop, one at a time.
            rows = await asyncio.to_thread(lambda: list(session.exec(query)))
            if not rows:
                await asyncio.to_thread(session.rollback)
                return 0
            sent: list[int] = []
            try:
                # The producer keeps send order per partition (idempotent, so retries cannot
                # reorder); only acknowledged rows are marked, the rest go again next pass.
                acks = [
                    (
                        row.seq,
                        await self.publish(
                            row.payload, row.topic, row.key, json.loads(row.headers)
                        ),
                    )
                    for row in rows
                ]
                for seq, ack in acks:
                    await ack
                    assert seq is not None
                    sent.append(seq)
            finally:
                if sent:
                    await asyncio.to_thread(_mark_sent, session, sent)
                    self.published += len(sent)
            return len(sent)


def _mark_sent(session: Session, sent: list[int]) -> None:
    session.execute(
        OutboxMessage.__table__.update()  # type: ignore[attr-defined]
        .where(OutboxMessage.seq.in_(sent))  # type: ignore[union-attr]
        .values(published_at=func.now())
    )
    session.commit()


def pending_count(engine: Engine) -> int:
    """Events recorded but not yet published (a health and test signal)."""
    with Session(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(OutboxMessage)
            .where(
                OutboxMessage.published_at.is_(None)  # type: ignore[union-attr]
            )
        ).one()
