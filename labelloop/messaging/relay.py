"""The outbox relay: publishes recorded events to Kafka in commit order and marks them sent.

Each key's (a task's) outbox rows are in the order its transactions committed
(:mod:`labelloop.messaging.outbox`), and they reach Kafka in that order with any number of
relays: one relay pass runs at a time (an advisory lock on PostgreSQL, a file lock beside a
SQLite database), each publishing the lowest pending rows in ``seq`` order. A record the broker
can never take (too large, corrupt) is *set aside*: marked with its error, counted in
``labelloop_outbox_set_aside_total`` and shown by ``labelloop audit``
(:func:`set_aside_events`), while the relay goes on with the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import errors as kafka_errors
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from labelloop.db import file_lock, sqlite_lock_path
from labelloop.messaging.outbox import OutboxMessage
from labelloop.metrics import OUTBOX_SET_ASIDE

log = logging.getLogger(__name__)
RELAY_LOCK = 0x6C6C0002
"""The PostgreSQL advisory lock namespace of a relay pass (beside the outbox's ``KEY_LOCKS``)."""


Publish = Callable[[bytes, str, str, dict[str, str]], Awaitable[Awaitable[Any]]]
"""publish(payload, topic, key, headers): hands one record to the producer and returns the
awaitable of the broker's acknowledgement, so a batch is sent before any ack is awaited."""


class RelayBusy(Exception):
    """Another relay is in its pass (only one publishes at a time, to keep commit order)."""


RECORD_ERRORS: tuple[type[Exception], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.CorruptRecordException,  # also named InvalidMessageError
    kafka_errors.UnsupportedForMessageFormatError,
)
"""aiokafka errors about one record, not the broker or the connection: no retry can fix them."""


def is_record_error(error: BaseException) -> bool:
    """True when the broker (or the producer) refuses this record itself, forever."""
    return isinstance(error, RECORD_ERRORS)


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
        self._file_lock = sqlite_lock_path(engine, "relay")
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
            if self._file_lock is not None and not held.enter_context(
                file_lock(self._file_lock, wait=False)
            ):
                raise RelayBusy
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
