"""Creating labelloop's topics with their retention, and checking the broker answers."""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from labelloop.config import Settings
from labelloop.messaging.broker import max_record_bytes
from labelloop.messaging.security import kafka_client_options
from schemas.topics import Topic, dlq_topic

AUDIT_RETENTION_MS = -1
"""Project topics keep every event forever: they are the audit log that replay rebuilds from."""


def topic_names(settings: Settings) -> list[str]:
    """Every topic labelloop uses, with its DLQ, as named on the broker."""
    names = [settings.topic(topic) for topic in Topic]
    return names + [dlq_topic(name) for name in names]


async def ensure_topics_async(settings: Settings) -> list[str]:
    """Create labelloop's missing topics; returns the new ones."""
    return await create_topics(settings, topic_names(settings))


async def create_topics(settings: Settings, names: list[str]) -> list[str]:
    """Create the missing ones of ``names`` (``kafka_partitions`` each, infinite retention)."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(
                name=name,
                num_partitions=settings.kafka_partitions,
                replication_factor=settings.kafka_replication_factor,
                topic_configs={
                    "retention.ms": str(AUDIT_RETENTION_MS),
                    # above the producer's limit: the broker never refuses what it is sent
                    "max.message.bytes": str(max_record_bytes(settings) + 1024),
                },
            )
            for name in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another process was quicker
            await admin.create_topics(new_topics)
        return missing
    finally:
        await admin.close()


def ensure_topics(settings: Settings) -> list[str]:
    return asyncio.run(ensure_topics_async(settings))


async def _describe_cluster(settings: Settings) -> bool:
    admin = AIOKafkaAdminClient(**kafka_client_options(settings), request_timeout_ms=3000)
    try:
        await asyncio.wait_for(admin.start(), timeout=5)
        await asyncio.wait_for(admin.describe_cluster(), timeout=5)
        return True
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


async def cluster_reachable_async(settings: Settings) -> bool:
    """True when the broker answers a metadata request (not merely an open port), reached
    with the settings' credentials: a refused login is not ready."""
    return await _describe_cluster(settings)


def cluster_reachable(settings: Settings) -> bool:
    return asyncio.run(_describe_cluster(settings))
