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

from schemas.envelope import utcnow

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
    """Host (ASCII: IDNA-encoded) and port of an http(s) URL without credentials; UnsafeTarget
    otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise UnsafeTarget("webhook URLs must be http or https")
    if not parts.hostname:
        raise UnsafeTarget("webhook URL has no host")
    if parts.username or parts.password:
        raise UnsafeTarget("webhook URLs must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise UnsafeTarget(f"webhook URL has a bad port: {error}") from error
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise UnsafeTarget(f"{host!r} is not a valid host name ({error})") from error
    return host, port


TRANSLATED_V4 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))
"""NAT64's well-known prefix (RFC 6052) and SIIT's IPv4-translated one: the last 32 bits are
the IPv4 address a packet ends up at."""
COMPATIBLE_V4 = ipaddress.ip_network("::/96")
"""IPv4-compatible addresses (deprecated by RFC 4291): never a webhook target."""
OPAQUE_TRANSLATION = (ipaddress.ip_network("64:ff9b:1::/48"), ipaddress.ip_network("2001::/32"))
"""Local-use NAT64 and Teredo: they lead to IPv4 addresses this check cannot see."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (mapped, 6to4, NAT64, SIIT), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in TRANSLATED_V4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_address(address: IPAddress, allowlist: list[IPNetwork]) -> None:
    """Refuse non-public addresses unless an allowlisted network admits them; an IPv6 address
    that leads to an IPv4 one is judged by that IPv4 address."""
    if any(address in network for network in allowlist):
        return
    if isinstance(address, ipaddress.IPv6Address) and not (
        address.is_loopback or address.is_unspecified
    ):
        if address in COMPATIBLE_V4 or any(address in net for net in OPAQUE_TRANSLATION):
            raise UnsafeTarget(
                f"{address} leads to an IPv4 address that cannot be checked (IPv4-compatible, "
                "local NAT64 or Teredo); add its network to LABELLOOP_WEBHOOK_ALLOWLIST to "
                "deliver there"
            )
        embedded = embedded_ipv4(address)
        if embedded is not None:
            check_address(embedded, allowlist)
            return
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
    delay: float = min(base_delay_s * 2 ** (attempt - 1) * jitter, MAX_DELAY_S)
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
    return max(0.0, (when - (now or utcnow())).total_seconds())
