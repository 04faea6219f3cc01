"""Consumer lag: how far each consumer group's committed offsets trail the topics' ends.

The same number KEDA's Kafka scaler reads to scale a consumer; exported at ``/metrics`` as
``labelloop_consumer_lag{group,topic}`` so a dashboard shows it without a cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from labelloop.metrics import CONSUMER_LAG

log = logging.getLogger(__name__)


async def consumer_lag(
    bootstrap_servers: str,
    group: str,
    topics: Iterable[str],
    *,
    security: Mapping[str, Any] | None = None,
) -> dict[str, int]:
    """Messages not yet committed by ``group``, per topic (partitions summed).

    A partition the group never committed counts from its beginning, as a new consumer
    with ``auto_offset_reset=earliest`` would read it. ``security`` is
    :func:`~labelloop.messaging.security.kafka_security_options` of the settings.
    """
    async with _LagReader(bootstrap_servers, security) as reader:
        return await reader.lag(group, topics)


class _LagReader:
    """One admin client and one consumer (for offsets), kept open across refreshes."""

    def __init__(self, bootstrap_servers: str, security: Mapping[str, Any] | None) -> None:
        options = {"bootstrap_servers": bootstrap_servers, **(security or {})}
        self.admin = AIOKafkaAdminClient(**options)
        self.consumer = AIOKafkaConsumer(**options, enable_auto_commit=False)

    async def __aenter__(self) -> _LagReader:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lag(self, group: str, topics: Iterable[str]) -> dict[str, int]:
        committed = await _committed_offsets(self.admin, group)
        wanted = set(topics)
        # Metadata of every topic: asking for named ones could auto-create a missing one.
        partitions = [
            TopicPartition(described["topic"], partition["partition"])
            for described in await self.admin.describe_topics()
            if described["topic"] in wanted
            for partition in described["partitions"]
        ]
        if not partitions:
            return {}
        ends = await self.consumer.end_offsets(partitions)
        starts = await self.consumer.beginning_offsets(partitions)
        lag: dict[str, int] = {}
        for position in partitions:
            done = committed.get(position)
            offset = done.offset if done is not None and done.offset >= 0 else starts[position]
            lag[position.topic] = lag.get(position.topic, 0) + max(0, ends[position] - offset)
        return lag


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
    bootstrap_servers: str,
    groups: dict[str, list[str]],
    interval_s: float = 15.0,
    *,
    security: Mapping[str, Any] | None = None,
) -> None:
    """Refresh the lag gauge of each group's topics every ``interval_s`` (a background loop);
    its clients stay open between refreshes and are rebuilt after a broker outage."""
    while True:
        try:
            async with _LagReader(bootstrap_servers, security) as reader:
                while True:
                    for group, topics in groups.items():
                        for topic, lag in (await reader.lag(group, topics)).items():
                            CONSUMER_LAG.labels(group, topic).set(lag)
                    await asyncio.sleep(interval_s)
        except Exception as error:  # a broker outage must not end the loop
            log.debug("consumer lag unavailable: %s", error)
            await asyncio.sleep(interval_s)
