"""The messaging core on the real broker: dead-lettering and the transactional outbox."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest
from faststream.kafka import KafkaBroker
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from labelloop.config import Settings
from labelloop.messaging.broker import consumer_options, create_broker, kafka_publisher
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.messaging.relay import OutboxRelay
from labelloop.messaging.topics import create_topics
from labelloop.projections import NOTHING
from labelloop.stack.manager import Stack
from schemas.envelope import CloudEvent
from schemas.events import EventData, TaskJobsReady, TaskJobsReadyData
from schemas.topics import dlq_topic
from tests.integration.kafka_helpers import read_topic, wait_for

pytestmark = pytest.mark.integration


class PingData(EventData):
    n: int


class Ping(CloudEvent[PingData]):
    type: Literal["io.labelloop.test.ping.v1"] = "io.labelloop.test.ping.v1"


class ProbeRow(SQLModel, table=True):
    """State a probe handler changes together with the event announcing it."""

    __tablename__ = "test_probe_rows"
    id: str = Field(primary_key=True)
    n: int


def ping(n: int) -> Ping:
    return Ping.create(PingData(n=n), source="/tests", key=(n,), taskid="task-1")


def pong(cause: Ping) -> TaskJobsReady:
    """The handler's answer: a contract event (recorded for its topic, which a test maps to its
    own), linked to its cause."""
    return TaskJobsReady.create(
        TaskJobsReadyData(task_id="task-1", job_count=cause.data.n),
        source="/tests",
        key=(cause.id,),
        taskid="task-1",
        cause=cause,
    )


async def started(broker: KafkaBroker) -> KafkaBroker:
    await broker.start()
    return broker


async def test_poison_messages_go_to_dlq_untouched_and_consumer_goes_on(
    stack: Stack, test_settings: Settings, unique: str
) -> None:
    topic = test_settings.topic("probe")
    await create_topics(test_settings, [topic, dlq_topic(topic)])
    broker = create_broker(test_settings, client_id="test-dlq")
    seen: list[int] = []
    failures = {"boom": 0}

    @broker.subscriber(topic, **consumer_options(test_settings, f"dlq-{unique}"))  # type: ignore[untyped-decorator]
    async def handle(event: Ping) -> None:
        if event.data.n == 13:
            failures["boom"] += 1
            raise RuntimeError("13 is unlucky")
        seen.append(event.data.n)

    not_json = b"{this is not json"
    wrong_schema = (
        b'{"specversion": "1.0", "id": "x", "source": "/t", "type": "io.other.v9", "data": {}}'
    )
    unlucky = ping(13).model_dump_json().encode()
    try:
        await broker.start()
        await broker.publish(ping(1).model_dump_json().encode(), topic=topic, key=b"task-1")
        await broker.publish(not_json, topic=topic, key=b"task-1")
        await broker.publish(wrong_schema, topic=topic, key=b"task-1")
        await broker.publish(unlucky, topic=topic, key=b"task-1")
        await broker.publish(ping(2).model_dump_json().encode(), topic=topic, key=b"task-1")
        assert await wait_for(lambda: seen == [1, 2]), f"consumer stopped: saw {seen}"
    finally:
        await broker.stop()

    dead = await read_topic(test_settings.kafka_bootstrap_servers, dlq_topic(topic), expect=3)
    assert [r.value for r in dead] == [not_json, wrong_schema, unlucky]
    headers = [dict(r.headers) for r in dead]
    assert b"PoisonMessage" in headers[0]["dlq-error-type"]
    assert b"ValidationError" in headers[1]["dlq-error-type"]
    assert headers[1]["dlq-attempts"] == b"1", "poison is not retried"
    assert b"13 is unlucky" in headers[2]["dlq-error"]
    assert headers[2]["dlq-attempts"] == str(test_settings.handler_max_attempts).encode()
    assert failures["boom"] == test_settings.handler_max_attempts
    assert all(h["dlq-original-topic"] == topic.encode() for h in headers)
    assert all(r.key == b"task-1" for r in dead)


def probe_rows(engine: Engine) -> list[ProbeRow]:
    with Session(engine) as session:
        return list(session.exec(select(ProbeRow)))


def outbox_rows(engine: Engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage)))


async def test_outbox_failed_handler_publishes_nothing_and_retry_publishes_once(
    stack: Stack, test_settings: Settings, engine: Engine
) -> None:
    out_topic = test_settings.topic("pong")
    await create_topics(test_settings, [out_topic])
    broker = await started(create_broker(test_settings, client_id="test-outbox"))
    relay = OutboxRelay(engine, kafka_publisher(broker))
    transactions = Transactions(engine, topic_name=lambda _: out_topic, projection=NOTHING)
    cause = ping(7)

    def handle(crash_after_write: bool) -> None:
        with transactions.unit_of_work("probe", cause.id) as uow:
            if uow.already_done:
                return
            uow.session.add(ProbeRow(id=cause.id, n=cause.data.n))
            uow.record(pong(cause))
            uow.session.flush()  # the row really reached the database inside the transaction
            if crash_after_write:
                raise RuntimeError("crash after the DB write")

    try:
        with pytest.raises(RuntimeError):
            handle(crash_after_write=True)
        assert probe_rows(engine) == [] and outbox_rows(engine) == [], "half state left behind"
        assert await relay.flush_once() == 0
        assert await read_topic(test_settings.kafka_bootstrap_servers, out_topic, timeout_s=1) == []

        handle(crash_after_write=False)  # the retry
        handle(crash_after_write=False)  # a redelivery of the same message: no effect
        assert len(probe_rows(engine)) == 1 and len(outbox_rows(engine)) == 1
        assert await relay.flush_once() == 1
        assert await relay.flush_once() == 0, "a sent event is never sent again"
    finally:
        await broker.stop()

    published = await read_topic(test_settings.kafka_bootstrap_servers, out_topic, expect=1)
    assert len(published) == 1
    answer = TaskJobsReady.model_validate_json(published[0].value)
    assert answer.causationid == cause.id and answer.correlationid == cause.id
    assert published[0].key == b"task-1"
    assert dict(published[0].headers)["ce_type"] == TaskJobsReady.event_type().encode()


async def test_consumer_retry_after_crash_publishes_exactly_once(
    stack: Stack, test_settings: Settings, engine: Engine, unique: str
) -> None:
    in_topic, out_topic = test_settings.topic("ping"), test_settings.topic("pong")
    await create_topics(test_settings, [in_topic, out_topic])
    broker = create_broker(test_settings, client_id="test-outbox-consumer")
    relay = OutboxRelay(engine, kafka_publisher(broker), poll_s=0.1)
    transactions = Transactions(
        engine, topic_name=lambda _: out_topic, on_commit=relay.wake, projection=NOTHING
    )
    crashes = {"left": 1}

    @broker.subscriber(in_topic, **consumer_options(test_settings, f"outbox-{unique}"))  # type: ignore[untyped-decorator]
    async def handle(event: Ping) -> None:
        with transactions.unit_of_work("probe", event.id) as uow:
            if uow.already_done:
                return
            uow.session.add(ProbeRow(id=event.id, n=event.data.n))
            uow.record(pong(event))
            uow.session.flush()
            if crashes["left"]:
                crashes["left"] -= 1
                raise RuntimeError("crash after the DB write")

    try:
        await broker.start()
        relay_task = asyncio.create_task(relay.run())
        body = ping(42).model_dump_json().encode()
        await broker.publish(body, topic=in_topic, key=b"task-1")
        await broker.publish(body, topic=in_topic, key=b"task-1")  # redelivered duplicate
        published = await read_topic(
            test_settings.kafka_bootstrap_servers, out_topic, expect=1, settle_s=2.0
        )
        relay_task.cancel()
    finally:
        await broker.stop()
    assert len(published) == 1
    assert crashes["left"] == 0, "the first attempt crashed"
    assert len(probe_rows(engine)) == 1
