"""Transactional outbox and processed-message log: state and events never drift apart.

Every change goes through a :class:`UnitOfWork`, one database transaction, opened by
:meth:`Transactions.unit_of_work` (a consumer passes the ids of the messages it handles; a
request passes none). ``uow.record(event)`` is the one call that records an effect: it applies
the event with the projection the transactions are bound to (the service's
:class:`~labelloop.projections.Projection`, the functions a replay uses too) and records it for
the topic its contract names (:func:`schemas.topics.topic_of`), together with the handled
message ids. Only after that commit does the :class:`OutboxRelay` publish the recorded events
to Kafka and mark them sent. So:

* a handler that fails after its writes rolls everything back: no state, no event;
* a redelivered message finds its id already processed and does nothing;
* a crash between commit and publish leaves the event in the outbox, and the next relay pass
  (in this process or after a restart) publishes it. Publishing is at least once; event ids are
  deterministic, so consumers deduplicate on them.

Order: the events of one key (a task) reach Kafka in the order their transactions committed,
with any number of relays. Recorded rows are inserted at commit time under a per-key lock
held to the commit (PostgreSQL advisory locks; SQLite has one writer at a time), so one key's
``seq`` order is its commit order; and one relay pass runs at a time (an advisory lock on
PostgreSQL, a file lock beside a SQLite database), each publishing the lowest pending rows in
``seq`` order. A record the broker can never take (too large, corrupt) is *set aside*: marked
with its error, counted in ``labelloop_outbox_set_aside_total`` and shown by ``labelloop audit``,
while the relay goes on with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Column, LargeBinary, Text, func, insert, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from labelloop.faults import crash_point
from labelloop.messaging.errors import EventTooLarge
from labelloop.metrics import OUTBOX_SET_ASIDE
from labelloop.projections import Projection
from schemas.envelope import CloudEvent
from schemas.topics import topic_of

log = logging.getLogger(__name__)
EventT = TypeVar("EventT", bound=CloudEvent[Any])
DEFAULT_EVENT_MAX_BYTES = 1_000_000
"""``Settings.event_max_bytes``'s default, for transactions made without settings (tests, tools)."""
KEY_LOCKS, RELAY_LOCK = 0x6C6C0001, 0x6C6C0002
"""PostgreSQL advisory lock namespaces (the first int of the two-int form)."""


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
    processed_at: datetime = Field(default_factory=_now)


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
        self.recorded: list[CloudEvent[Any]] = []
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

    def apply(self, event: CloudEvent[Any]) -> None:
        """Apply a consumed event to the bound projection (nothing is recorded)."""
        self._projection().apply(self.session, event)

    def apply_all(self, events: Sequence[CloudEvent[Any]]) -> None:
        """:meth:`apply` for each of ``events`` in order, by runs, as :meth:`record_all` does."""
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
        self.recorded.extend(new)

    def flush(self) -> None:
        """Insert what was recorded, in order, just before the transaction commits.

        On PostgreSQL each key's advisory lock is taken first (in key order, so two flushes
        never deadlock) and held to the commit: the ``seq`` a key's rows get follows the order
        in which its transactions commit, which is the order the relay publishes.
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
                        {"consumer": consumer, "message_id": handled, "processed_at": _now()}
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


Publish = Callable[[bytes, str, str, dict[str, str]], Awaitable[Awaitable[Any]]]
"""publish(payload, topic, key, headers): hands one record to the producer and returns the
awaitable of the broker's acknowledgement, so a batch is sent before any ack is awaited."""


class RelayBusy(Exception):
    """Another relay is in its pass (only one publishes at a time, to keep commit order)."""


RECORD_ERRORS: tuple[str, ...] = (
    "MessageSizeTooLargeError",
    "RecordTooLargeError",
    "InvalidMessageError",
    "CorruptRecordException",
    "UnsupportedForMessageFormatError",
)
"""aiokafka errors about one record, not the broker or the connection: no retry can fix them."""


def is_record_error(error: BaseException) -> bool:
    """True when the broker (or the producer) refuses this record itself, forever."""
    return type(error).__name__ in RECORD_ERRORS


class OutboxRelay:
    """Publishes recorded events in commit order and marks them sent.

    Wakes at once after a local commit (:meth:`wake`) and every ``poll_s`` otherwise, which
    picks up events left behind by a crashed process. Relays in several processes take turns:
    a pass holds the relay lock (see the module docstring), so one key's events are never
    published by two relays at once, out of order.

    A record the producer refuses for itself (:func:`is_record_error`: too large) is set aside
    at once. One the broker refuses is published alone on the next pass, since the broker
    refuses a whole batch for one bad record; refused alone, it is set aside. (labelloop's
    topics take more than the producer sends, so the broker refusing one is a topic made
    elsewhere with a smaller ``max.message.bytes``.)
    """

    def __init__(
        self,
        engine: Engine,
        publish: Publish,
        *,
        poll_s: float = 0.5,
        batch: int = 200,
        busy_retry_s: float = 0.05,
    ):
        self.engine = engine
        self.publish = publish
        self.poll_s = poll_s
        self.batch = batch
        self.busy_retry_s = busy_retry_s
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._suspects: set[int] = set()
        self._file_lock = _sqlite_lock_path(engine)
        self.published = 0
        self.set_aside = 0

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
            wait_s = self.poll_s
            try:
                while await self.flush_once():
                    pass
            except asyncio.CancelledError:
                raise
            except RelayBusy:
                wait_s = self.busy_retry_s  # the other relay's pass ends soon: look again
            except Exception:
                log.exception("outbox relay pass failed; retrying in %.1fs", self.poll_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait_s)
            self._wakeup.clear()

    async def flush_once(self) -> int:
        """Publish one batch of pending events; returns how many were sent or set aside.

        Raises :class:`RelayBusy` when another relay holds the relay lock.
        """
        with contextlib.ExitStack() as held, Session(self.engine) as session:
            if self._file_lock is not None:
                held.enter_context(_exclusive_file(self._file_lock))
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))  # type: ignore[union-attr]
                .order_by(OutboxMessage.seq)  # type: ignore[arg-type]
                .limit(self.batch)
            )
            # The session's database calls run off the event loop, one at a time.
            rows = await asyncio.to_thread(self._claim, session, query)
            if not rows:
                await asyncio.to_thread(session.rollback)
                return 0
            if rows[0].seq in self._suspects:
                rows = rows[:1]  # refused in a batch before: alone now, to know who is at fault
            sent: list[int] = []
            aside: dict[int, str] = {}
            try:
                for row in await self._publish_in_order(rows, sent):
                    aside[row[0]] = row[1]
            finally:
                if sent or aside:
                    await asyncio.to_thread(_mark_done, session, sent, aside)
                    self.published += len(sent)
                    self.set_aside += len(aside)
                    self._suspects.difference_update(sent)
                    self._suspects.difference_update(aside)
            return len(sent) + len(aside)

    def _claim(self, session: Session, query: Any) -> list[OutboxMessage]:
        if self.engine.dialect.name == "postgresql":
            locked = session.execute(
                text("SELECT pg_try_advisory_xact_lock(:space, 0)"), {"space": RELAY_LOCK}
            ).scalar()
            if not locked:
                session.rollback()
                raise RelayBusy
        return list(session.exec(query))

    async def _publish_in_order(
        self, rows: list[OutboxMessage], sent: list[int]
    ) -> list[tuple[int, str]]:
        """Send every row before awaiting any ack; append acknowledged seqs to ``sent`` in order
        and stop at the first failure. Returns rows to set aside: one the producer refused on
        its own (too large: it never entered a batch), or one the broker refused alone."""
        # The producer keeps send order per partition (idempotent, so retries cannot reorder);
        # only acknowledged rows are marked, the rest go again next pass.
        acks: list[tuple[OutboxMessage, Awaitable[Any]]] = []
        refused: tuple[OutboxMessage, BaseException] | None = None
        for row in rows:
            try:
                headers = json.loads(row.headers)
                acks.append((row, await self.publish(row.payload, row.topic, row.key, headers)))
            except Exception as error:
                if not is_record_error(error):
                    raise
                refused = (row, error)
                break
        for row, ack in acks:
            assert row.seq is not None
            try:
                await ack
            except Exception as error:
                if not is_record_error(error):
                    raise
                if len(rows) > 1:  # the broker fails a whole batch: which record is at fault?
                    self._suspects.add(row.seq)
                    log.warning(
                        "outbox: %s refused in a batch (%s); alone next", row.event_id, error
                    )
                    return []
                return [(row.seq, f"{type(error).__name__}: {error}")]
            sent.append(row.seq)
        if refused is not None:
            row, cause = refused
            assert row.seq is not None
            return [(row.seq, f"{type(cause).__name__}: {cause}")]
        return []


def _mark_done(session: Session, sent: list[int], aside: dict[int, str]) -> None:
    table = OutboxMessage.__table__  # type: ignore[attr-defined]
    if sent:
        session.execute(
            table.update()
            .where(OutboxMessage.seq.in_(sent))  # type: ignore[union-attr]
            .values(published_at=func.now())
        )
    for seq, error in aside.items():
        row = session.get(OutboxMessage, seq)
        assert row is not None
        session.execute(
            table.update()
            .where(OutboxMessage.seq == seq)
            .values(published_at=func.now(), error=error[:2000])
        )
        OUTBOX_SET_ASIDE.labels(topic=row.topic).inc()
        log.error(
            "outbox: set aside %s (%s, %d bytes) for good: %s",
            row.event_id,
            row.event_type,
            len(row.payload),
            error,
        )
    session.commit()


def _sqlite_lock_path(engine: Engine) -> str | None:
    """The relay lock beside a SQLite database file (its processes share one machine)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{os.path.abspath(database)}.relay-lock"


@contextmanager
def _exclusive_file(path: str) -> Iterator[None]:
    """Hold ``path``'s advisory lock for the block, or raise :class:`RelayBusy` at once."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RelayBusy from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def set_aside_events(engine: Engine, task_id: str | None = None) -> list[dict[str, Any]]:
    """Records the relay set aside (never published), oldest first: the audit's view."""
    with Session(engine) as session:
        rows = session.exec(
            select(OutboxMessage)
            .where(col(OutboxMessage.error).is_not(None))
            .order_by(col(OutboxMessage.seq))
        )
        return [
            {
                "event_id": row.event_id,
                "type": row.event_type,
                "topic": row.topic,
                "key": row.key,
                "bytes": len(row.payload),
                "recorded_at": row.created_at.isoformat(),
                "error": row.error,
            }
            for row in rows
            if task_id is None or json.loads(row.headers).get("ce_taskid") == task_id
        ]
