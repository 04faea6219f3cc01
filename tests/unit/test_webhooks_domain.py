"""Webhook rules: signatures a standard library accepts, target safety, the retry schedule."""

from __future__ import annotations

import ipaddress
import json
import random
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from webhooks.domain import (
    Outcome,
    UnsafeTarget,
    backoff_s,
    check_address,
    check_url_shape,
    decide,
    new_secret,
    parse_allowlist,
    parse_retry_after,
    secret_key,
    sign,
)


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = new_secret()
    body = json.dumps({"id": "e1", "type": "t"}).encode()
    timestamp = int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "msg_1", timestamp, body),
    }
    assert Webhook(secret).verify(body, headers) == {"id": "e1", "type": "t"}
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_stale_timestamp_is_refused_by_receivers() -> None:
    secret = new_secret()
    body = b"{}"
    old = int(time.time()) - 3600
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(old),
        "webhook-signature": sign(secret, "m", old, body),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("secret", ["nope", "whsec_!!!", "whsec_c2hvcnQ="])
def test_bad_secrets(secret: str) -> None:
    with pytest.raises(ValueError):
        secret_key(secret)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        # IPv6 that leads to private IPv4 (Python 3.11 calls these global)
        "64:ff9b::a00:1",  # NAT64 to 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 to 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "::10.0.0.1",  # IPv4-compatible (deprecated)
        "::8.8.8.8",
        "::ffff:0:10.0.0.1",  # IPv4-translated (SIIT)
        "64:ff9b:1::a00:1",  # local-use NAT64: its IPv4 end is not visible
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_non_public_addresses_refused(address: str) -> None:
    with pytest.raises(UnsafeTarget, match="LABELLOOP_WEBHOOK_ALLOWLIST"):
        check_address(ipaddress.ip_address(address), [])


def test_allowlist_admits() -> None:
    check_address(ipaddress.ip_address("127.0.0.1"), parse_allowlist("127.0.0.0/8, 10.0.0.0/8"))
    check_address(ipaddress.ip_address("93.184.216.34"), [])
    for public in ("64:ff9b::808:808", "2002:808:808::1", "::ffff:0:8.8.8.8", "2606:4700::1111"):
        check_address(ipaddress.ip_address(public), [])  # translated to a public IPv4: fine


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "http://u:p@host/",
        "http:///nohost",
        "http://host:99999/",
        "http://host:port/",
        "http://" + "a" * 64 + ".example/",  # a DNS label is at most 63 octets
    ],
)
def test_url_shape(url: str) -> None:
    with pytest.raises(UnsafeTarget):
        check_url_shape(url)


def test_international_host_names_are_checked_in_their_ascii_form() -> None:
    assert check_url_shape("https://bücher.example:8443/hook") == ("xn--bcher-kva.example", 8443)
    assert check_url_shape("http://[2606:4700::1111]/") == ("2606:4700::1111", 80)


@pytest.mark.parametrize(
    ("status", "attempt", "outcome"),
    [
        (200, 1, Outcome.DELIVERED),
        (204, 3, Outcome.DELIVERED),
        (500, 1, Outcome.RETRY),
        (503, 8, Outcome.FAILED),
        (408, 1, Outcome.RETRY),
        (429, 2, Outcome.RETRY),
        (None, 1, Outcome.RETRY),
        (404, 1, Outcome.FAILED),
        (400, 1, Outcome.FAILED),
        (301, 1, Outcome.FAILED),
    ],
)
def test_retry_decisions(status: int | None, attempt: int, outcome: Outcome) -> None:
    assert decide(status, attempt, 8, base_delay_s=5).outcome is outcome


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [backoff_s(n, 5, rng=rng) for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        assert 5 * 2 ** (n - 1) * 0.75 <= delay <= 5 * 2 ** (n - 1) * 1.25
    assert backoff_s(1, 5, retry_after_s=120) == 120


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30") == 30
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90)), now=now) == 90
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
