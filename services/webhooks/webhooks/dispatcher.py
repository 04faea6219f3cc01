"""The dispatcher: sends pending deliveries, each subscription in its own lane.

One slow or dead receiver only ever delays its own deliveries, never ingest, jobgen or another
subscriber. Each attempt is signed (Standard Webhooks), goes only to an address checked just
before it (:func:`webhooks.domain.check_address`), and its outcome decides the next:
delivered, retried with backoff, or failed. A target refused as unsafe fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from labelloop import __version__
from labelloop.config import Settings
from labelloop.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_FAILURES, WEBHOOK_LATENCY
from schemas.envelope import utcnow
from webhooks.domain import (
    IPAddress,
    Outcome,
    UnsafeTarget,
    check_address,
    check_url_shape,
    decide,
    parse_allowlist,
    parse_retry_after,
    sign,
)
from webhooks.models import Attempt, Delivery, Subscription

log = logging.getLogger(__name__)
MAX_REPLY_BYTES = 64 * 1024
"""Of a receiver's reply body, the most read (enough to keep its connection alive)."""


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (checked before each delivery, not only once)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt came to: its outcome, the receiver's status or why there was none, and
    for a retry, how long to wait."""

    outcome: Outcome
    status_code: int | None = None
    error: str | None = None
    delay_s: float = 0.0


class Dispatcher:
    """Sends due deliveries, each subscription in its own lane, at most one request per lane."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.allowlist = parse_allowlist(settings.webhook_allowlist)
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(settings.webhook_max_in_flight)
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.poll_s = 0.25

    def wake(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wakeup.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(
            timeout=self.settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": f"labelloop-webhooks/{__version__}"},
        ) as client:
            try:
                while True:
                    for subscription_id in await asyncio.to_thread(self._due_subscriptions):
                        if subscription_id not in self._lanes:
                            self._lanes[subscription_id] = asyncio.create_task(
                                self._drain(client, subscription_id)
                            )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_s)
                    self._wakeup.clear()
            finally:
                for lane in self._lanes.values():
                    lane.cancel()
                await asyncio.gather(*self._lanes.values(), return_exceptions=True)

    def _due_subscriptions(self) -> list[str]:
        now = utcnow()
        with Session(self.engine) as session:
            rows = session.exec(
                select(Delivery.subscription_id)
                .where(Delivery.status == "pending", Delivery.next_attempt_at <= now)
                .distinct()
                .limit(1000)
            ).all()
        return list(rows)

    async def _drain(self, client: httpx.AsyncClient, subscription_id: str) -> None:
        try:
            while True:
                async with self._slots:  # claimed only once it can go: the lease covers the
                    # attempt (its deadline is webhook_timeout_s, the lease 30 s longer)
                    delivery = await asyncio.to_thread(self._claim_next, subscription_id)
                    if delivery is None:
                        break
                    await self.attempt(client, delivery)
        except Exception:
            log.exception("webhook lane %s failed; it restarts on the next pass", subscription_id)
        finally:
            self._lanes.pop(subscription_id, None)

    def _claim_next(self, subscription_id: str) -> Delivery | None:
        """The subscription's next due delivery, leased so another dispatcher leaves it alone."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.webhook_timeout_s + 30)
        with Session(self.engine, expire_on_commit=False) as session:
            candidates = session.exec(
                select(Delivery)
                .where(
                    Delivery.subscription_id == subscription_id,
                    Delivery.status == "pending",
                    Delivery.next_attempt_at <= now,
                    or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
                )
                .order_by(col(Delivery.next_attempt_at), col(Delivery.created_at))
                .limit(5)
            ).all()
            for candidate in candidates:
                claimed = session.execute(
                    update(Delivery)
                    .where(
                        col(Delivery.id) == candidate.id,
                        or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
                    )
                    .values(lease_until=lease)
                )
                session.commit()
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return candidate
        return None

    async def attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        """One POST of ``delivery``; its outcome, logged, decides what happens next."""
        with Session(self.engine) as session:
            subscription = session.get(Subscription, delivery.subscription_id)
        number = delivery.attempts + 1
        started = time.perf_counter()
        result = await self._try(client, subscription, delivery, number)
        latency_ms = (time.perf_counter() - started) * 1000
        WEBHOOK_ATTEMPTS.labels(result.outcome.value).inc()
        WEBHOOK_LATENCY.observe(latency_ms / 1000)
        if result.outcome is Outcome.FAILED:
            WEBHOOK_FAILURES.inc()
        self._record(delivery, number, result, latency_ms)
        log.info(
            "webhook %s attempt %d → %s (%s) in %.0f ms",
            delivery.id,
            number,
            result.outcome.value,
            result.status_code or result.error,
            latency_ms,
        )

    async def _try(
        self,
        client: httpx.AsyncClient,
        subscription: Subscription | None,
        delivery: Delivery,
        number: int,
    ) -> AttemptResult:
        """Attempt number ``number`` and what follows it (:func:`webhooks.domain.decide`)."""
        if subscription is None or not subscription.active:
            return AttemptResult(Outcome.FAILED, error="the subscription was deleted")
        status_code: int | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            status_code, retry_after = await self._post(client, subscription, delivery)
            if status_code >= 300:
                error = f"HTTP {status_code}"
        except UnsafeTarget as unsafe:  # no retry makes a refused target acceptable
            return AttemptResult(Outcome.FAILED, error=f"refused target: {unsafe}")
        except (httpx.TimeoutException, TimeoutError):
            error = f"timed out after {self.settings.webhook_timeout_s:.0f}s in all"
        except (httpx.HTTPError, OSError) as network:
            error = f"{type(network).__name__}: {network}"
        decision = decide(
            status_code,
            number,
            delivery.allowed_attempts,
            base_delay_s=self.settings.webhook_retry_base_s,
            retry_after_s=retry_after,
        )
        return AttemptResult(decision.outcome, status_code, error, decision.delay_s)

    def _record(
        self, delivery: Delivery, number: int, result: AttemptResult, latency_ms: float
    ) -> None:
        """Log the attempt and move the delivery on: delivered, failed, or due again later."""
        now = utcnow()
        values: dict[str, Any] = {
            "attempts": number,
            "last_status_code": result.status_code,
            "last_error": result.error,
            "lease_until": None,
        }
        if result.outcome is Outcome.DELIVERED:
            values.update(status="delivered", delivered_at=now)
        elif result.outcome is Outcome.FAILED:
            values.update(status="failed")
        else:
            values.update(next_attempt_at=now + timedelta(seconds=result.delay_s))
        with Session(self.engine) as session:
            session.add(
                Attempt(
                    delivery_id=delivery.id,
                    attempt=number,
                    status_code=result.status_code,
                    latency_ms=round(latency_ms, 2),
                    error=result.error,
                )
            )
            session.execute(
                update(Delivery).where(col(Delivery.id) == delivery.id).values(**values)
            )
            session.commit()

    async def _post(
        self, client: httpx.AsyncClient, subscription: Subscription, delivery: Delivery
    ) -> tuple[int, float | None]:
        """POST to the address checked just now (DNS rebinding cannot swap it afterwards).

        One deadline for the whole attempt (httpx's timeouts are per phase and per read, so a
        receiver trickling bytes would hold the lane), within the delivery's lease; of the
        reply's body at most ``MAX_REPLY_BYTES`` are read (only status and ``Retry-After``
        count).
        """
        async with asyncio.timeout(self.settings.webhook_timeout_s):
            return await self._post_within_deadline(client, subscription, delivery)

    async def _post_within_deadline(
        self, client: httpx.AsyncClient, subscription: Subscription, delivery: Delivery
    ) -> tuple[int, float | None]:
        host, port = check_url_shape(subscription.url)
        addresses = await asyncio.to_thread(resolve_host, host, port)
        if not addresses:
            raise UnsafeTarget(f"{host} does not resolve")
        for address in addresses:
            check_address(address, self.allowlist)
        url = httpx.URL(subscription.url)
        pinned = url.copy_with(host=str(addresses[0]))
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "host": url.netloc.decode(),
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(
                subscription.secret, delivery.id, timestamp, delivery.payload
            ),
        }
        async with client.stream(
            "POST",
            pinned,
            content=delivery.payload,
            headers=headers,
            extensions={"sni_hostname": host} if url.scheme == "https" else None,
        ) as response:
            drained = 0  # a short reply is read, so the connection is kept; a long one is cut
            async for chunk in response.aiter_raw():
                drained += len(chunk)
                if drained > MAX_REPLY_BYTES:
                    break
            return response.status_code, parse_retry_after(response.headers.get("retry-after"))
