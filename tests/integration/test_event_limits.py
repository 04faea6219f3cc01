"""No event outgrows the broker at any task size, and a record the broker refuses for good is set
aside while the relay goes on (issue 14, item 1). Real database, real broker."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from ingest import projections as ingest
from ingest.handlers import IngestDeps, handle_records
from ingest.models import Frame
from ingest.reconciler import listed_record
from jobgen import projections as jobgen
from jobgen.handlers import handle_data_ready, handle_frames_listed
from labelloop.audit import task_audit
from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.messaging.broker import create_broker, kafka_publisher
from labelloop.messaging.errors import EventTooLarge
from labelloop.messaging.outbox import DEFAULT_EVENT_MAX_BYTES, OutboxMessage, Transactions
from labelloop.messaging.relay import OutboxRelay, set_aside_events
from labelloop.messaging.topics import create_topics
from labelloop.migrations import target_metadata
from labelloop.projections import NOTHING
from labelloop.stack.manager import Stack
from labelloop.tasks import Task
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    JobCreated,
    TaskDataReady,
    TaskFramesListed,
    TaskFramesListedData,
    TaskJobsReady,
)
from tests.integration.kafka_helpers import read_topic
from tests.unit.test_ingest_reconciler import MemoryStore, listed

pytestmark = pytest.mark.integration

FRAMES = 100_000


def outbox_rows(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.seq)))  # type: ignore[arg-type]


async def test_a_100000_frame_task_is_listed_and_cut_in_events_the_broker_takes(
    stack: Stack, test_settings: Settings, engine: Engine, unique: str
) -> None:
    task_id = f"big{unique}"
    # long names (200 characters): the worst case is what the limits are for
    names = [f"{index:06d}-{'x' * 189}.jpg" for index in range(FRAMES)]
    with Session(engine) as session:
        session.add(Task(id=task_id, name="big", labels=["car"], segment_size=0, created_by="t"))
        session.commit()
        session.execute(  # the frames ingest processed, recorded in bulk
            insert(Frame.__table__),  # type: ignore[attr-defined]
            [
                {
                    "task_id": task_id,
                    "name": name,
                    "object_key": f"tasks/{task_id}/data/{name}",
                    "status": "processed",
                    "sha256": "0" * 64,
                    "width": 8,
                    "height": 8,
                    "size_bytes": 100,
                    "format": "JPEG",
                }
                for name in names
            ],
        )
        session.commit()
    topic = test_settings.topic("big")
    await create_topics(test_settings, [topic])
    transactions = Transactions(engine, topic_name=lambda _: topic)
    store = MemoryStore()
    manifest_key = f"tasks/{task_id}/manifest.json"
    store.objects[manifest_key] = json.dumps({"files": names}).encode()
    deps = IngestDeps(
        store=store,  # type: ignore[arg-type]
        transactions=transactions.bound(ingest.PROJECTION),
        max_frame_bytes=1_000_000,
        max_frame_pixels=1_000_000,
        max_manifest_bytes=64 * 1024 * 1024,
    )
    # the manifest arrives last: ingest completes the task and lists it
    await handle_records(
        [listed_record(listed(manifest_key, len(store.objects[manifest_key])), store.bucket)],
        deps,
    )
    recorded = [
        TaskFramesListed.model_validate_json(row.payload)
        if row.event_type == TaskFramesListed.event_type()
        else TaskDataReady.model_validate_json(row.payload)
        for row in outbox_rows(engine)
    ]
    *listing, ready = recorded
    assert isinstance(ready, TaskDataReady) and ready.data.frame_count == FRAMES
    assert ready.data.parts == len(listing) == FRAMES // MAX_FRAMES_PER_EVENT
    assert [name for part in listing for name in part.data.frames] == names  # type: ignore[union-attr]

    jobgen_transactions = transactions.bound(jobgen.PROJECTION)
    handle_frames_listed(listing, jobgen_transactions)  # type: ignore[arg-type]
    assert len(handle_data_ready(ready, jobgen_transactions)) == FRAMES // MAX_FRAMES_PER_EVENT
    rows = outbox_rows(engine)
    sizes = Counter[str]()
    for row in rows:
        assert len(row.payload) <= DEFAULT_EVENT_MAX_BYTES, (row.event_type, len(row.payload))
        sizes[row.event_type] = max(sizes[row.event_type], len(row.payload))
    types = Counter(row.event_type for row in rows)
    assert types[JobCreated.event_type()] == FRAMES // MAX_FRAMES_PER_EVENT
    jobs_ready = TaskJobsReady.model_validate_json(rows[-1].payload)
    assert jobs_ready.data.job_count == FRAMES // MAX_FRAMES_PER_EVENT
    print("largest event per type (bytes):", dict(sizes))

    broker = create_broker(test_settings, client_id="relay-big")
    await broker.start()
    try:
        relay = OutboxRelay(engine, kafka_publisher(broker), batch=200)
        while await relay.flush_once():
            pass
    finally:
        await broker.stop()
    assert relay.published == len(rows) and relay.set_aside == 0
    assert set_aside_events(engine) == []
    published = await read_topic(
        test_settings.kafka_bootstrap_servers, topic, expect=len(rows), timeout_s=60
    )
    assert len(published) == len(rows)


def _set_aside_total(topic: str) -> float:
    return REGISTRY.get_sample_value("labelloop_outbox_set_aside_total", {"topic": topic}) or 0.0


async def test_a_record_the_producer_refuses_is_set_aside_and_the_rest_flows_in_order(
    stack: Stack, test_settings: Settings, engine: Engine, unique: str
) -> None:
    strict = test_settings.model_copy(update={"event_max_bytes": 16_384})
    topic = strict.topic("strict")
    await create_topics(strict, [topic])  # max.message.bytes above the producer's limit
    task_id = f"strict{unique}"
    # records over the producer's limit, as an outbox made before the limits could hold
    transactions = Transactions(
        engine, topic_name=lambda _: topic, max_event_bytes=3_000_000, projection=NOTHING
    )

    def listing(part: int, name_length: int) -> TaskFramesListed:
        return TaskFramesListed.create(
            TaskFramesListedData(
                task_id=task_id,
                part=part,
                parts=9,
                frames=[f"{n:03d}{'y' * (name_length - 3)}" for n in range(MAX_FRAMES_PER_EVENT)],
            ),
            source="/tests",
            key=(task_id, part),
            taskid=task_id,
        )

    small, too_big, small_again = listing(0, 4), listing(1, 200), listing(2, 4)
    huge = listing(3, 4)  # bigger than a valid event can be: copied past validation
    far_too_big = huge.model_copy(
        update={"data": huge.data.model_copy(update={"frames": ["z" * 2500] * 1000})}
    )
    last = listing(4, 4)
    with transactions.unit_of_work() as uow:
        for event in (small, too_big, small_again, far_too_big, last):
            uow.record(event)
    guarded = Transactions(engine, max_event_bytes=strict.event_max_bytes, projection=NOTHING)
    with pytest.raises(EventTooLarge), guarded.unit_of_work() as uow:  # refused where it is made
        uow.record(listing(5, 200))
    before = _set_aside_total(topic)
    broker = create_broker(strict, client_id="relay-strict")
    await broker.start()
    try:
        relay = OutboxRelay(engine, kafka_publisher(broker))
        for _ in range(10):
            if not await relay.flush_once():
                break
    finally:
        await broker.stop()
    published = await read_topic(strict.kafka_bootstrap_servers, topic, expect=3)
    ids = [json.loads(record.value)["id"] for record in published]
    assert list(dict.fromkeys(ids)) == [small.id, small_again.id, last.id]
    aside = set_aside_events(engine, task_id)
    assert [event["event_id"] for event in aside] == [too_big.id, far_too_big.id]
    assert all("MessageSizeTooLarge" in event["error"] for event in aside), aside
    assert relay.set_aside == 2 and _set_aside_total(topic) - before == 2
    with Session(engine) as session:
        session.add(Task(id=task_id, name="strict", labels=["car"], created_by="t"))
        session.commit()
    target_metadata().create_all(engine)  # the audit reads every service's tables
    assert [e["event_id"] for e in task_audit(engine, task_id, projections())["unpublished"]] == [
        too_big.id,
        far_too_big.id,
    ]
