"""Kafka topic names. Every topic is keyed by task id so one task's events stay ordered."""

from enum import StrEnum


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
