"""Batch consumers: what one poll holds is applied together, its offsets committed after.

Each consumer takes what Kafka has ready (up to ``max_records``; never a wait for a batch to
fill) and hands the whole list to its ``apply`` function, which records the effects of the
batch in as few transactions as it can, keeping per-message idempotency (processed ids,
natural-key event ids). FastStream commits the batch's offsets only when ``apply`` returns.
A service's ``apply`` is the dispatcher of its typed handlers
(:mod:`labelloop.messaging.subscribers`).

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
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Annotated, Any, Protocol, Union

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage
from pydantic import Field, TypeAdapter, ValidationError

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
    broker: KafkaBroker, model: Any, *, keep: Collection[type[Any]] | None = None
) -> Callable[[StreamMessage[Any], Any], Awaitable[list[Any]]]:
    """A batch decoder: each record parsed as ``model`` alone, the ones that fail dead-lettered.

    ``keep``: the classes the consumer handles; a valid message of another class (an event
    type on its topics that it does not take) is left out, as done. Every record is still
    validated against the whole ``model``, so a bad one is dead-lettered by every consumer
    group of its topic, whichever types each takes.

    FastStream caches a message's decoded body, so a retried batch does not dead-letter twice.
    The records of the kept messages stay on the message, for :func:`apply_batch`.
    """
    adapter: TypeAdapter[Any] = TypeAdapter(model)

    async def decode(msg: StreamMessage[Any], original: Any) -> list[Any]:
        valid, records = [], []
        for record in msg.raw_message:
            try:
                message = adapter.validate_json(record.value or b"")
            except ValidationError as error:
                poison = PoisonMessage(f"not a valid message: {error.errors()[:3]}")
                await dead_letter(broker, record, poison, attempts=1)
                continue
            if keep is None or type(message) in keep:
                valid.append(message)
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
    handled: Collection[type[Any]] | None = None,
    description: str | None = None,
) -> None:
    """Subscribe ``apply`` to ``topics`` as a batch consumer of messages typed ``model``.

    ``handled``: the classes ``apply`` takes (default: all of ``model``); the others are
    validated, then left out (:func:`each_valid`). The handler's argument is typed by them, so
    the AsyncAPI document shows what this consumer takes.
    """
    broker, settings = runtime.broker, runtime.settings
    policy = failure_policy(settings)
    payload: Any = model if handled is None else union_of(handled)

    async def handler(messages: list[payload], message: KafkaMessage) -> None:
        records = getattr(message, _RECORDS, ())
        await apply_batch(messages, records, apply, broker=broker, policy=policy)

    handler.__name__ = handler.__qualname__ = "on_" + re.sub(r"\W", "_", title)
    handler.__doc__ = apply.__doc__
    broker.subscriber(
        *(settings.topic(topic) for topic in topics),
        **batch_options(settings, group, max_records=max_records or settings.consumer_batch_max),
        decoder=each_valid(broker, model, keep=handled),
        title=title,
        description=description,
    )(handler)


def union_of(classes: Collection[type[Any]]) -> Any:
    """The type of one of ``classes``: discriminated by ``type`` when they are events."""
    members = tuple(classes)
    if len(members) == 1:
        return members[0]
    if all("type" in getattr(cls, "model_fields", {}) for cls in members):
        return Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007 - runtime tuple
    return Union[members]  # noqa: UP007 - runtime tuple
