"""Consumer lag: how far each consumer group's committed offsets trail the topics' ends.

The same number KEDA's Kafka scaler reads to scale a consumer; exported at ``/metrics`` as
``labelloop_consumer_lag{group,topic}`` so a dashboard shows it without a cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from labelloop.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)


async def consumer_lag(bootstrap_servers: str, group: str, topics: Iterable[str]) -> dict[str, int]:
    """Messages not yet committed by ``group``, per topic (partitions summed).

    A partition the group never committed counts from its beginning, as a new consumer
    with ``auto_offset_reset=earliest`` would read it.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await _committed_offsets(admin, group)
        wanted = set(topics)
        # Metadata of every topic: asking for named ones could auto-create a missing one.
        partitions = [
            TopicPartition(described["topic"], partition["partition"])
            for described in await admin.describe_topics()
            if described["topic"] in wanted
            for partition in described["partitions"]
        ]
        if not partitions:
            return {}
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        lag: dict[str, int] = {}
        for position in partitions:
            done = committed.get(position)
            offset = done.offset if done is not None and done.offset >= 0 else starts[position]
            lag[position.topic] = lag.get(position.topic, 0) + max(0, ends[position] - offset)
        return lag
    finally:
        await consumer.stop()
        await admin.close()


async def _committed_offsets(
    admin: AIOKafkaAdminClient, group: str, attempts: int = 20
) -> dict[TopicPartition, Any]:
    """The group's committed offsets; a young broker has no group coordinator for a few
    seconds (its ``__consumer_offsets`` topic is being created), so that is waited out."""
    for attempt in range(attempts):
        try:
            offsets: dict[TopicPartition, Any] = await admin.list_consumer_group_offsets(group)
            return offsets
        except GroupCoordinatorNotAvailableError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


async def watch_lag(
    bootstrap_servers: str, groups: dict[str, list[str]], interval_s: float = 15.0
) -> None:
    """Refresh the lag gauge of each group's topics every ``interval_s`` (a background loop)."""
    while True:
        for group, topics in groups.items():
            try:
                for topic, lag in (await consumer_lag(bootstrap_servers, group, topics)).items():
                    CONSUMER_LAG.labels(group, topic).set(lag)
            except Exception as error:  # a broker outage must not end the loop
                log.debug("consumer lag of %s unavailable: %s", group, error)
        await asyncio.sleep(interval_s)
