"""Kafka topic names. Every topic is keyed by task id so one task's events stay ordered."""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Any


class Topic(StrEnum):
    """The logical topics of labelloop (a deployment may prefix them, see ``Settings.topic``)."""

    STORAGE_OBJECTS = "storage.objects"
    """Raw S3 event records, published by MinIO itself (its notify_kafka target)."""
    TASKS_EVENTS = "tasks.events"
    """Task lifecycle (created), so every projection can be rebuilt from Kafka alone."""
    INGEST_EVENTS = "ingest.events"
    JOBGEN_EVENTS = "jobgen.events"
    LABELS_EVENTS = "labels.events"
    TRAINER_EVENTS = "trainer.events"
    WEBHOOKS_EVENTS = "webhooks.events"
    """Webhook subscriptions created and deleted (never their secrets), so a replay has them."""


DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: poison messages land there untouched."""
    return f"{topic}{DLQ_SUFFIX}"


class NoTopicCarries(LookupError):
    """An event type that no topic's contract (``schemas.events.EVENTS_BY_TOPIC``) lists."""


@cache
def _topic_by_type() -> dict[str, Topic]:
    from schemas.events import EVENTS_BY_TOPIC  # that module imports this one

    return {
        cls.event_type(): topic for topic, classes in EVENTS_BY_TOPIC.items() for cls in classes
    }


def messages_on(topic: Topic) -> tuple[type[Any], ...]:
    """Every message model ``topic`` carries: its event types, or the object store's records."""
    if topic is Topic.STORAGE_OBJECTS:
        from schemas.s3 import S3EventNotification, S3TestEvent

        return (S3EventNotification, S3TestEvent)
    from schemas.events import EVENTS_BY_TOPIC

    return EVENTS_BY_TOPIC[topic]


def topic_carrying(message: type[Any]) -> Topic:
    """The topic whose contract carries messages of class ``message`` (an event class, or an
    S3 record model); :class:`NoTopicCarries` for any other class."""
    for topic in Topic:
        if message in messages_on(topic):
            return topic
    raise NoTopicCarries(f"no topic carries {message.__name__}: list it in schemas.events")


def topic_of(event_type: str) -> Topic:
    """The topic whose contract carries events of CloudEvents ``type`` ``event_type``."""
    try:
        return _topic_by_type()[event_type]
    except KeyError:
        raise NoTopicCarries(
            f"no topic carries {event_type!r}: list its class in schemas.events.EVENTS_BY_TOPIC"
        ) from None
