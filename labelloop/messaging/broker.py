"""The Kafka broker every service uses, configured once.

* authenticated and encrypted as the settings say (:mod:`labelloop.messaging.security`);
* idempotent producer (``enable_idempotence``, acks=all): a retried send is never duplicated;
* keys are task ids, so one task's events stay in order on one partition;
* consumers commit offsets only after their handler's effects (FastStream ``NACK_ON_ERROR``:
  an error that escapes the DLQ middleware rewinds to the message, or batch, not past it);
* poison messages are dead-lettered by :class:`DeadLetterMiddleware` (batch consumers:
  :mod:`labelloop.messaging.batches`).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from faststream.middlewares import AckPolicy

from labelloop.config import Settings
from labelloop.messaging.dlq import DeadLetterMiddleware, FailurePolicy
from labelloop.messaging.errors import PoisonMessage
from labelloop.messaging.relay import Publish
from labelloop.messaging.security import broker_security

log = logging.getLogger(__name__)


async def decode_json(msg: StreamMessage[Any], original: Any) -> Any:
    """Every labelloop topic carries JSON (CloudEvents or S3 records), whatever its content-type.

    ``application/cloudevents+json`` is not recognised by FastStream's default decoder, and
    MinIO sends no content-type at all, so decode here and call anything else poison.
    """
    try:
        return json.loads(msg.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PoisonMessage(f"message body is not JSON: {error}") from error


RECORD_OVERHEAD_BYTES = 64 * 1024
"""Room for a record's key, headers and framing above its body."""


def max_record_bytes(settings: Settings) -> int:
    """The producer's ``max_request_size``, which labelloop's topics' ``max.message.bytes``
    exceeds: a record too large is refused by the producer, on its own, before it is sent.
    (A refusal by the broker would fail the whole batch and, with an idempotent producer,
    leave its sequence numbers out of step.)"""
    return settings.event_max_bytes + RECORD_OVERHEAD_BYTES


def create_broker(settings: Settings, *, client_id: str) -> KafkaBroker:
    """A broker with labelloop's producer, decoding and failure policy."""
    policy = failure_policy(settings)
    return KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id=client_id,
        security=broker_security(settings),
        enable_idempotence=True,
        acks="all",
        max_request_size=max_record_bytes(settings),
        decoder=decode_json,
        middlewares=[partial(DeadLetterMiddleware, policy=policy)],
        graceful_timeout=15.0,
        log_level=logging.DEBUG,
    )


def failure_policy(settings: Settings) -> FailurePolicy:
    """How hard every consumer tries a message before it goes to the DLQ."""
    return FailurePolicy(
        max_attempts=settings.handler_max_attempts, transient_pause_s=settings.transient_retry_s
    )


def consumer_options(settings: Settings, group: str) -> dict[str, Any]:
    """Subscriber settings shared by every labelloop consumer (see the module docstring)."""
    return {
        "group_id": settings.consumer_group(group),
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": 15 * 60 * 1000,
    }


def kafka_publisher(broker: KafkaBroker) -> Publish:
    """The outbox relay's way out: one record, keyed, acknowledged by the broker."""

    async def publish(payload: bytes, topic: str, key: str, headers: dict[str, str]) -> Any:
        return await broker.publish(
            payload, topic=topic, key=key.encode(), headers=headers, no_confirm=True
        )

    return publish
