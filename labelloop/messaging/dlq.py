"""Dead-letter middleware: a poison message is copied untouched to ``<topic>.dlq`` and the
consumer moves on; a dependency outage is waited out instead (nothing is dead-lettered for it).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRecord
from faststream import BaseMiddleware
from faststream.exceptions import HandlerException
from faststream.message import StreamMessage

from labelloop.messaging.errors import is_poison, is_transient
from labelloop.metrics import DEAD_LETTERS
from schemas.envelope import utcnow
from schemas.topics import dlq_topic

log = logging.getLogger(__name__)

MAX_TRANSIENT_PAUSE_S = 30.0


@dataclass(frozen=True)
class FailurePolicy:
    """How hard a consumer tries before it gives a message up to the DLQ."""

    max_attempts: int = 3
    transient_pause_s: float = 1.0
    retry_pause_s: float = 0.2


def dlq_headers(
    record: ConsumerRecord[Any, Any], error: BaseException, attempts: int
) -> dict[str, str]:
    """The original headers plus where the message came from and why it failed."""
    headers = {key: value.decode(errors="replace") for key, value in (record.headers or ())}
    detail = "".join(traceback.format_exception_only(type(error), error)).strip()
    headers.update(
        {
            "dlq-error": detail[:4000],
            "dlq-error-type": f"{type(error).__module__}.{type(error).__qualname__}",
            "dlq-original-topic": record.topic,
            "dlq-original-partition": str(record.partition),
            "dlq-original-offset": str(record.offset),
            "dlq-attempts": str(attempts),
            "dlq-failed-at": utcnow().isoformat(),
        }
    )
    return headers


class DeadLetterMiddleware(BaseMiddleware):
    """Retries a failing handler, then dead-letters; waits out transient failures forever.

    Sits inside FastStream's acknowledgement: returning normally commits the offset, so a
    message is committed only after its effects or after its copy is safe in the DLQ. If the
    DLQ itself cannot be written the error propagates and the message is consumed again.
    """

    policy = FailurePolicy()

    def __init__(self, msg: Any, /, *, context: Any, policy: FailurePolicy | None = None) -> None:
        super().__init__(msg, context=context)
        if policy is not None:
            self.policy = policy

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        attempts = 0
        transient_pause = self.policy.transient_pause_s
        while True:
            try:
                return await call_next(msg)
            except HandlerException:
                raise
            except Exception as error:
                if is_transient(error):
                    log.warning(
                        "dependency unavailable (%s); retrying in %.1fs", error, transient_pause
                    )
                    await asyncio.sleep(transient_pause)
                    transient_pause = min(transient_pause * 2, MAX_TRANSIENT_PAUSE_S)
                    continue
                attempts += 1
                if is_poison(error) or attempts >= self.policy.max_attempts:
                    await self._dead_letter(msg, error, attempts)
                    return None
                log.warning("handler failed (attempt %d): %r", attempts, error)
                await asyncio.sleep(self.policy.retry_pause_s * 2 ** (attempts - 1))

    async def _dead_letter(
        self, msg: StreamMessage[Any], error: BaseException, attempts: int
    ) -> None:
        raw = msg.raw_message
        records = raw if isinstance(raw, tuple) else (raw,)  # a batch goes record by record
        if not all(isinstance(record, ConsumerRecord) for record in records):
            raise error
        for record in records:
            await dead_letter(self.context.get("broker"), record, error, attempts)


async def dead_letter(
    broker: Any, record: ConsumerRecord[Any, Any], error: BaseException, attempts: int
) -> None:
    """Copy ``record`` untouched to its topic's DLQ, with why it failed in the headers."""
    target = dlq_topic(record.topic)
    DEAD_LETTERS.labels(record.topic).inc()
    await broker.publish(
        record.value, topic=target, key=record.key, headers=dlq_headers(record, error, attempts)
    )
    log.error(
        "dead-lettered %s[%d]@%d to %s: %r",
        record.topic,
        record.partition,
        record.offset,
        target,
        error,
    )
