"""Per-task order on Kafka is commit order, with several relays and across a broker outage
(issue 14, item 8). Real database (SQLite, or PostgreSQL in the second pass), real broker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import defaultdict

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from labelloop.config import Settings
from labelloop.messaging.broker import create_broker, kafka_publisher
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.messaging.relay import OutboxRelay
from labelloop.messaging.topics import create_topics
from labelloop.projections import NOTHING
from labelloop.stack.manager import Stack
from schemas.events import TaskFramesListed, TaskFramesListedData
from tests.integration.kafka_helpers import read_topic, wait_for
from tests.integration.test_faults import stopped

pytestmark = pytest.mark.integration

TASKS, TRANSACTIONS, PER_TRANSACTION = 6, 60, 3


STEPS = TRANSACTIONS * PER_TRANSACTION


def step(task_id: str, number: int) -> TaskFramesListed:
    """The ``number``-th event of a task (its listing part): its place in the commit order."""
    return TaskFramesListed.create(
        TaskFramesListedData(task_id=task_id, part=number, parts=STEPS, frames=["f.jpg"]),
        source="/tests",
        key=(task_id, number),
        taskid=task_id,
    )


def pending_count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.exec(
            select(func.count())
            .select_from(OutboxMessage)
            .where(col(OutboxMessage.published_at).is_(None))
        ).one()


def writer(transactions: Transactions, task_ids: list[str]) -> None:
    """Commits transactions for each task in turn: a task's steps commit in step order."""
    counters = dict.fromkeys(task_ids, 0)
    for _ in range(TRANSACTIONS):
        for task_id in task_ids:
            with transactions.unit_of_work() as uow:
                first = counters[task_id]
                uow.record_all([step(task_id, first + n) for n in range(PER_TRANSACTION)])
            counters[task_id] = first + PER_TRANSACTION


async def test_three_relays_and_a_broker_outage_keep_each_tasks_commit_order(
    stack: Stack, test_settings: Settings, engine: Engine, unique: str
) -> None:
    topic = test_settings.topic("order")
    await create_topics(test_settings, [topic])
    transactions = Transactions(engine, topic_name=lambda _: topic, projection=NOTHING)
    brokers = [create_broker(test_settings, client_id=f"relay-{n}") for n in range(3)]
    for broker in brokers:
        await broker.start()
    task_ids = [f"order{unique}{n}" for n in range(TASKS)]
    try:
        running = [
            OutboxRelay(engine, kafka_publisher(broker), poll_s=0.05, batch=25)
            for broker in brokers
        ]
        loops = [asyncio.create_task(relay.run()) for relay in running]
        # two writers, each owning half the tasks, commit while the relays publish
        threads = [
            threading.Thread(target=writer, args=(transactions, part), daemon=True)
            for part in (task_ids[::2], task_ids[1::2])
        ]
        for thread in threads:
            thread.start()
        await asyncio.sleep(1.0)

        def outage() -> None:
            with stopped(stack, "kafka", seconds=3):  # events pile up in the outbox meanwhile
                pass

        await asyncio.to_thread(outage)
        for thread in threads:
            await asyncio.to_thread(thread.join, 180)
        assert await wait_for(lambda: pending_count(engine) == 0, timeout_s=120)
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        print("published by each relay:", [relay.published for relay in running])
    finally:
        for broker in brokers:
            await broker.stop()

    total = TASKS * TRANSACTIONS * PER_TRANSACTION
    records = await read_topic(
        test_settings.kafka_bootstrap_servers, topic, expect=total, timeout_s=60
    )
    seen: dict[str, list[int]] = defaultdict(list)
    ids: set[str] = set()
    for record in records:
        document = json.loads(record.value)
        if document["id"] in ids:
            continue  # at least once: a redelivered duplicate, dropped by its id as consumers do
        ids.add(document["id"])
        seen[document["data"]["task_id"]].append(document["data"]["part"])
    assert len(ids) == total, "every event arrived"
    for task_id in task_ids:
        steps = seen[task_id]
        assert steps == sorted(steps), f"{task_id}: published out of commit order"
        assert steps == list(range(STEPS))


async def test_one_keys_transactions_take_seq_in_commit_order(
    stack: Stack, test_settings: Settings, engine: Engine, unique: str
) -> None:
    """A transaction that records for a key holds the key until it commits: a concurrent one
    for the same key commits after it and is numbered after it, so it is published after it."""
    topic = test_settings.topic("keyorder")
    await create_topics(test_settings, [topic])
    transactions = Transactions(engine, topic_name=lambda _: topic, projection=NOTHING)
    task_id = f"key{unique}"
    first_flushed, second_done = threading.Event(), threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with transactions.unit_of_work() as uow:
            uow.record(step(task_id, 0))
            uow.flush()  # what commit does first: its seq is taken, the key held
            first_flushed.set()
            release_first.wait(10)

    def second() -> None:
        first_flushed.wait(10)
        with transactions.unit_of_work() as uow:
            uow.record(step(task_id, 1))
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    try:
        assert await asyncio.to_thread(first_flushed.wait, 10)
        assert not await asyncio.to_thread(second_done.wait, 1.0), "the key was not held"
    finally:
        release_first.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    assert second_done.is_set()
    broker = create_broker(test_settings, client_id="relay-key")
    await broker.start()
    try:
        assert await OutboxRelay(engine, kafka_publisher(broker)).flush_once() == 2
    finally:
        await broker.stop()
    records = await read_topic(test_settings.kafka_bootstrap_servers, topic, expect=2)
    assert [json.loads(r.value)["data"]["part"] for r in records] == [0, 1]
