"""``labelloop replay``: rebuild every projection from Kafka alone, into another database.

The topics are the system of record (kept forever, ``retention.ms=-1``). A replay reads them
with a plain consumer that joins no group (so it moves no live offset and no live consumer
sees it), and applies each event through the same :class:`~labelloop.projections.Projection`
methods as a live handler's ``uow.record``. No service runs, so nothing is sent: no webhook, no
training, no inference, no new event. An event already in the target's event log is skipped, so
replaying twice into the same database changes nothing.

The projections come from the caller (``labelloop replay`` passes every service's,
:func:`labelloop.composition.projections`). What is rebuilt: :func:`projected_tables`. What is
not, and why: the outbox and processed-message log (the live processes' bookkeeping), the
training queue, the served-model cache, webhook deliveries and attempts (the side effects a
replay must not repeat), ingest's manifests (they live in the object store) and API tokens
(credentials never go into events).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session

from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.messaging.security import kafka_client_options
from labelloop.projections import Projection
from labelloop.timeline import append_new_events
from schemas.envelope import CloudEvent
from schemas.events import PROJECT_TOPICS, event_union
from schemas.topics import Topic

log = logging.getLogger(__name__)

EVENT_LOG_TABLE = "event_log"


def unreplayed_columns(projections: Iterable[Projection]) -> dict[str, tuple[str, ...]]:
    """Columns a replay does not reproduce, by table: the log's arrival order (a replay reads
    topics one after the other), and what each projection keeps out of its events
    (:attr:`Projection.unreplayed`)."""
    found: dict[str, tuple[str, ...]] = {EVENT_LOG_TABLE: ("seq",)}
    for projection in projections:
        found.update(projection.unreplayed)
    return found


BATCH = 1000


def projected_tables(projections: Iterable[Projection]) -> tuple[str, ...]:
    """Every table a replay of ``projections`` rebuilds, the event log first."""
    return (EVENT_LOG_TABLE, *(table for p in projections for table in p.tables))


_ANY_EVENT: TypeAdapter[CloudEvent[Any]] = TypeAdapter(event_union(*PROJECT_TOPICS))
"""Every project event type, discriminated by ``type``: one parse per record."""


def parse_event(value: bytes | None) -> CloudEvent[Any] | None:
    """The event a record carries, or None for anything that is not a known labelloop event."""
    if not value:
        return None
    try:
        return _ANY_EVENT.validate_json(value)
    except ValidationError:
        return None


class EventApplier:
    """Applies events to a session: the event log, then every projection that wants it (through
    :meth:`Projection.apply_run` and :meth:`Projection.apply`, as live handlers record them)."""

    def __init__(self, projection_list: Iterable[Projection]) -> None:
        self._projections = list(projection_list)

    def apply_batch(self, session: Session, events: Sequence[CloudEvent[Any]]) -> set[str]:
        """Apply the events not logged before: one log insert, then for each projection the
        events it takes, in order, each run of consecutive events sharing a batch function in
        one call. Returns the ids that were new."""
        new = append_new_events(session, events)
        for projection in self._projections:
            projection.apply_run(session, new)
        return {event.id for event in new}


@dataclass
class ReplayStats:
    """What a replay read and did."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    """Records that are not a known labelloop event (they are in the DLQs' keeping)."""
    seconds: float = 0.0
    applying_s: float = 0.0
    """Of ``seconds``, the time from the first batch read to the last applied (the rest is
    connecting and finding offsets): the pace a long history is replayed at."""
    per_topic: dict[str, int] = field(default_factory=dict)

    def count(self, topic: str, outcome: bool | None) -> None:
        """Tally one record: applied (True), seen before (False) or not an event (None)."""
        self.records += 1
        self.per_topic[topic] = self.per_topic.get(topic, 0) + 1
        if outcome is None:
            self.skipped += 1
        elif outcome:
            self.applied += 1
        else:
            self.duplicates += 1

    @property
    def events_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def applying_events_per_s(self) -> float:
        return self.records / self.applying_s if self.applying_s else 0.0

    def summary(self) -> dict[str, Any]:
        """The counts as ``labelloop replay --json`` prints them."""
        return {
            "records": self.records,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 2),
            "events_per_s": round(self.events_per_s, 1),
            "applying_events_per_s": round(self.applying_events_per_s, 1),
            "per_topic": self.per_topic,
        }


ProgressFn = Callable[[int, int], None]
"""Called with (records read, records to read) after each batch."""
Read = list[tuple[str, CloudEvent[Any] | None]]
"""One batch's records: each one's topic and event (None: not a labelloop event)."""


def _millis(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


async def _partitions(settings: Settings, topics: Sequence[Topic]) -> list[TopicPartition]:
    """The partitions of ``topics`` that exist (described, never auto-created by asking)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        described = {entry["topic"]: entry for entry in await admin.describe_topics()}
    finally:
        await admin.close()
    partitions: list[TopicPartition] = []
    for topic in topics:
        name = settings.topic(topic)
        if name not in described:
            log.warning("topic %s does not exist; nothing to replay from it", name)
            continue
        numbers = sorted(p["partition"] for p in described[name]["partitions"])
        partitions.extend(TopicPartition(name, number) for number in numbers)
    return partitions


async def _start_offsets(
    consumer: AIOKafkaConsumer,
    partitions: list[TopicPartition],
    since: datetime | None,
    end: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    """Each partition's first offset at or after ``since`` (its end when there is none)."""
    if since is None:
        return dict(await consumer.beginning_offsets(partitions))
    found = await consumer.offsets_for_times({tp: _millis(since) for tp in partitions})
    return {tp: found[tp].offset if found[tp] else end[tp] for tp in partitions}


def _events_within(
    batch: dict[TopicPartition, list[Any]],
    end: dict[TopicPartition, int],
    until_ms: int | None,
    pending: set[TopicPartition],
) -> Read:
    """The batch's records before each partition's end and ``until``, parsed, in order; a
    partition that reached either leaves ``pending``."""
    read: Read = []
    for tp, records in batch.items():
        for record in records:
            past_until = until_ms is not None and record.timestamp > until_ms
            if record.offset >= end[tp] or past_until:
                pending.discard(tp)
                break
            read.append((tp.topic, parse_event(record.value)))
    return read


async def replay(
    settings: Settings,
    database_url: str,
    *,
    projections: Sequence[Projection],
    since: datetime | None = None,
    until: datetime | None = None,
    topics: Sequence[Topic] = PROJECT_TOPICS,
    progress: ProgressFn | None = None,
) -> ReplayStats:
    """Apply the events Kafka recorded between ``since`` and ``until`` (its record timestamps)
    to the database at ``database_url``, which is migrated to the current schema first, through
    ``projections``.

    It reads up to the end offsets seen when it starts, so it finishes while producers go on.
    The database's durability is relaxed while it runs (:func:`_rebuilding`).
    """
    from labelloop.migrations import upgrade

    upgrade(database_url)
    with _bulk_collection(), _rebuilding(get_engine(database_url)) as connection:
        return await _replay(settings, connection, projections, since, until, topics, progress)


@contextmanager
def _bulk_collection() -> Iterator[None]:
    """Fewer, cheaper garbage collections while a replay runs, as they were after it.

    A replay allocates tens of objects per event (the parsed event, its rows): with the
    default thresholds the collector ran hundreds of times per thousand events, and each full
    collection walked every object the process holds (SQLAlchemy, pydantic, aiokafka), a sixth
    of the replay's time. What exists when it starts is frozen out of collection, and the
    youngest generation is collected after ``GC_YOUNGEST`` allocations instead of 700."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_YOUNGEST, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


GC_YOUNGEST = 20_000


@contextmanager
def _rebuilding(engine: Engine) -> Iterator[Connection]:
    """One connection for the whole replay, committing without waiting for the disk: SQLite
    with ``synchronous=OFF``, PostgreSQL with ``synchronous_commit=off``; as they were after.

    A rebuild needs no durability of its own: the events stay in Kafka, so a replay cut short
    by a crash is simply run again (each event is applied once, whatever the previous run
    wrote). A process crash loses nothing committed either way; what the setting gives up is
    the last commits, on PostgreSQL, or on SQLite the file itself, after a power loss or an
    operating system crash: run the replay again into a fresh database then."""
    with engine.connect() as connection:
        dialect = connection.dialect.name
        if dialect == "sqlite":
            previous = int(connection.exec_driver_sql("PRAGMA synchronous").scalar_one())
            connection.exec_driver_sql("PRAGMA synchronous=OFF")
        elif dialect == "postgresql":
            connection.exec_driver_sql("SET synchronous_commit TO off")
        connection.commit()
        try:
            yield connection
        finally:
            connection.rollback()  # what a failed batch left open
            if dialect == "sqlite":
                connection.exec_driver_sql(f"PRAGMA synchronous={previous}")
            elif dialect == "postgresql":
                connection.exec_driver_sql("RESET synchronous_commit")
            connection.commit()


async def _replay(
    settings: Settings,
    connection: Connection,
    projections: Sequence[Projection],
    since: datetime | None,
    until: datetime | None,
    topics: Sequence[Topic],
    progress: ProgressFn | None,
) -> ReplayStats:
    applier = EventApplier(projections)
    until_ms = _millis(until)
    stats = ReplayStats()
    started = applying = time.perf_counter()
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        client_id="labelloop-replay",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = await _partitions(settings, topics)
        if not partitions:
            return stats
        end, pending, total = await _position(consumer, partitions, since)
        applying = time.perf_counter()
        while pending:
            consumer.pause(*(set(partitions) - pending))
            batch = await consumer.getmany(*pending, timeout_ms=1000, max_records=BATCH)
            read = _events_within(batch, end, until_ms, pending)
            _apply_read(connection, applier, read, stats)
            for tp in list(pending):
                if await consumer.position(tp) >= end[tp]:
                    pending.discard(tp)
            if progress is not None:
                progress(stats.records, total)
    finally:
        await consumer.stop()
        stats.seconds = time.perf_counter() - started
        if stats.records:
            stats.applying_s = time.perf_counter() - applying
    return stats


async def _position(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], since: datetime | None
) -> tuple[dict[TopicPartition, int], set[TopicPartition], int]:
    """Assign ``partitions`` and seek each to its start: returns the end offsets seen now, the
    partitions with records to read, and how many records that is."""
    consumer.assign(partitions)
    end = await consumer.end_offsets(partitions)
    start = await _start_offsets(consumer, partitions, since, end)
    for tp in partitions:
        consumer.seek(tp, start[tp])
    pending = {tp for tp in partitions if start[tp] < end[tp]}
    return end, pending, sum(end[tp] - start[tp] for tp in partitions)


def _apply_read(
    connection: Connection, applier: EventApplier, read: Read, stats: ReplayStats
) -> None:
    """Apply one read batch in one transaction, in bulk, and count each record's outcome."""
    with Session(connection) as session:
        new = applier.apply_batch(session, [event for _, event in read if event is not None])
        session.commit()
    for topic, event in read:
        stats.count(topic, None if event is None else event.id in new)
        if event is not None:
            new.discard(event.id)  # a second copy in the same batch is a duplicate
