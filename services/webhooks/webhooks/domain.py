"""Pure webhook rules: secrets, signatures, target safety, and the retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
MIN_SECRET_BYTES = 24
MAX_DELAY_S = 3600.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes, as Standard Webhooks libraries expect."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a ``whsec_`` secret encodes; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError as error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from error
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret encodes at least {MIN_SECRET_BYTES} random bytes")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class UnsafeTarget(ValueError):
    """The URL points somewhere webhooks must not go (private, loopback, link-local...)."""


def parse_allowlist(text: str) -> list[IPNetwork]:
    return [
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    ]


def check_url_shape(url: str) -> tuple[str, int]:
    """Host and port of an http(s) URL without credentials; UnsafeTarget otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise UnsafeTarget("webhook URLs must be http or https")
    if not parts.hostname:
        raise UnsafeTarget("webhook URL has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("webhook URLs must not carry credentials")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


def check_address(address: IPAddress, allowlist: list[IPNetwork]) -> None:
    """Refuse non-public addresses unless an allowlisted network admits them."""
    if any(address in network for network in allowlist):
        return
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        kind = (
            "loopback"
            if address.is_loopback
            else "link-local"
            if address.is_link_local
            else "private"
            if address.is_private
            else "reserved"
        )
        raise UnsafeTarget(
            f"{address} is a {kind} address; add its network to LABELLOOP_WEBHOOK_ALLOWLIST "
            "to deliver there"
        )


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    delay_s: float = 0.0


RETRYABLE_STATUS = frozenset({408, 429})


def decide(
    status_code: int | None,
    attempt: int,
    allowed_attempts: int,
    *,
    base_delay_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """What follows attempt number ``attempt`` (1-based) that ended with ``status_code``
    (None: a network error or timeout)."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Outcome.DELIVERED)
    retryable = status_code is None or status_code >= 500 or status_code in RETRYABLE_STATUS
    if not retryable or attempt >= allowed_attempts:
        return Decision(Outcome.FAILED)
    return Decision(Outcome.RETRY, backoff_s(attempt, base_delay_s, retry_after_s, rng))


def backoff_s(
    attempt: int,
    base_delay_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """``base * 2^(attempt-1)`` with ±25 % jitter, never sooner than ``Retry-After``."""
    jitter = (rng or random).uniform(0.75, 1.25)
    delay = min(base_delay_s * 2 ** (attempt - 1) * jitter, MAX_DELAY_S)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_DELAY_S))
    return delay


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds, from delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
