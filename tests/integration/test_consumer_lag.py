"""Consumer lag, as KEDA and ``/metrics`` see it, measured on the real broker."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from labelloop.config import Settings
from labelloop.messaging.lag import consumer_lag
from labelloop.stack.manager import Stack

pytestmark = pytest.mark.integration


async def test_lag_counts_what_the_group_has_not_committed(
    stack: Stack, settings: Settings, unique: str
) -> None:
    topic, group = f"lag-{unique}", f"group-{unique}"
    bootstrap = settings.kafka_bootstrap_servers
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for index in range(10):
            await producer.send_and_wait(topic, f"{index}".encode(), partition=0)
    finally:
        await producer.stop()

    # A group that never committed is behind by everything.
    assert await consumer_lag(bootstrap, group, [topic]) == {topic: 10}

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        read = 0
        while read < 4:
            batch = await consumer.getmany(timeout_ms=2000, max_records=4 - read)
            read += sum(len(records) for records in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()

    assert await consumer_lag(bootstrap, group, [topic]) == {topic: 6}
    assert await consumer_lag(bootstrap, group, [f"absent-{unique}"]) == {}
