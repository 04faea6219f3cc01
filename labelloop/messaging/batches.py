"""Batch consumers: what one poll holds is applied together, its offsets committed after.

Each consumer takes what Kafka has ready (up to ``max_records``; never a wait for a batch to
fill) and hands the whole list to its ``apply`` function, which records the effects of the
batch in as few transactions as it can, keeping per-message idempotency (processed ids,
natural-key event ids). FastStream commits the batch's offsets only when ``apply`` returns.

Failures, without losing or doubling anything:

* a record that does not parse is dead-lettered alone by the decoder (:func:`each_valid`);
  its neighbours go on;
* a transient failure (a dependency away) propagates: :class:`DeadLetterMiddleware` waits
  and the batch is consumed again, and what it had already done is skipped;
* any other failure splits the batch (:func:`apply_batch`): each message is applied alone, in
  order, with the consumer's retries, and only the one that keeps failing is dead-lettered.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import TypeAdapter, ValidationError

from labelloop.config import Settings
from labelloop.messaging.broker import consumer_options, failure_policy
from labelloop.messaging.dlq import FailurePolicy, dead_letter
from labelloop.messaging.errors import PoisonMessage, is_poison, is_transient
from schemas.topics import Topic

log = logging.getLogger(__name__)

Apply = Callable[[Sequence[Any]], Awaitable[None]]
"""apply(messages): record the effects of a batch (idempotently: it may be seen again)."""

_RECORDS = "labelloop_records"


def batch_options(settings: Settings, group: str, *, max_records: int) -> dict[str, Any]:
    """Subscriber settings of a batch consumer: up to ``max_records`` a call, offsets after.

    A poll returns at once with whatever has arrived, so a batch adds no wait while records
    flow; an empty poll waits ``consumer_batch_wait_ms`` (twice, in FastStream) before the next.
    """
    return {
        **consumer_options(settings, group),
        "batch": True,
        "max_records": max_records,
        "batch_timeout_ms": settings.consumer_batch_wait_ms,
    }


def each_valid(
    broker: KafkaBroker, model: Any
) -> Callable[[StreamMessage[Any], Any], Awaitable[list[Any]]]:
    """A batch decoder: each record parsed as ``model`` alone, the ones that fail dead-lettered.

    FastStream caches a message's decoded body, so a retried batch does not dead-letter twice.
    The records of the valid messages stay on the message, for :func:`apply_batch`.
    """
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    async def decode(msg: StreamMessage[Any], original: Any) -> list[Any]:
        valid, records = [], []
        for record in msg.raw_message:
            try:
                valid.append(adapter.validate_json(record.value or b""))
            except ValidationError as error:
                poison = PoisonMessage(f"not a valid message: {error.errors()[:3]}")
                await dead_letter(broker, record, poison, attempts=1)
                continue
            records.append(record)
        setattr(msg, _RECORDS, tuple(records))
        return valid

    return decode


async def apply_batch(
    messages: Sequence[Any],
    records: Sequence[ConsumerRecord[Any, Any]],
    apply: Apply,
    *,
    broker: KafkaBroker,
    policy: FailurePolicy,
) -> None:
    """``apply`` the batch; if it fails for good, split it so only the bad message is lost."""
    try:
        await apply(messages)
        return
    except Exception as error:
        if is_transient(error) or len(records) != len(messages):
            raise
        log.warning(
            "batch of %d failed (%r); applying its messages one by one", len(messages), error
        )
    for message, record in zip(messages, records, strict=True):
        attempts = 0
        while True:
            try:
                await apply([message])
                break
            except Exception as error:
                if is_transient(error):
                    raise  # waited out by the middleware; the batch comes again, done parts skip
                attempts += 1
                if is_poison(error) or attempts >= policy.max_attempts:
                    await dead_letter(broker, record, error, attempts)
                    break
                log.warning("handler failed (attempt %d): %r", attempts, error)
                await asyncio.sleep(policy.retry_pause_s * 2 ** (attempts - 1))


class Wiring(Protocol):
    """What a subscription needs of a process (a :class:`labelloop.runtime.Runtime`)."""

    broker: KafkaBroker
    settings: Settings


def subscribe_batches(
    runtime: Wiring,
    topics: Iterable[Topic],
    *,
    group: str,
    model: Any,
    apply: Apply,
    title: str,
    max_records: int | None = None,
) -> None:
    """Subscribe ``apply`` to ``topics`` as a batch consumer of messages typed ``model``."""
    broker, settings = runtime.broker, runtime.settings
    policy = failure_policy(settings)

    async def handler(messages: list[model], message: KafkaMessage) -> None:
        records = getattr(message, _RECORDS, ())
        await apply_batch(messages, records, apply, broker=broker, policy=policy)

    handler.__name__ = handler.__qualname__ = f"on_{title.replace('-', '_')}"
    handler.__doc__ = apply.__doc__
    broker.subscriber(
        *(settings.topic(topic) for topic in topics),
        **batch_options(settings, group, max_records=max_records or settings.consumer_batch_max),
        decoder=each_valid(broker, model),
        title=title,
    )(handler)
