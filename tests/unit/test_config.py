"""Settings come from the environment, derive addresses, and refuse bad values early."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from labelloop.config import Settings


def test_addresses_derive_from_host_and_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_KAFKA_PORT", "19999")
    monkeypatch.setenv("LABELLOOP_S3_HOST", "10.1.2.3")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19999"
    assert settings.s3_endpoint == "10.1.2.3:" + str(settings.s3_port)


def test_explicit_bootstrap_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    assert Settings().kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LABELLOOP_KAFKA_PORT", "70000"),
        ("LABELLOOP_DATABASE_URL", "mysql://x"),
        ("LABELLOOP_HANDLER_MAX_ATTEMPTS", "0"),
    ],
)
def test_bad_values_fail_fast(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_topic_prefix() -> None:
    assert Settings(kafka_topic_prefix="t1.").topic("ingest.events") == "t1.ingest.events"


def test_cluster_refuses_local_default_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELLOOP_ENVIRONMENT", "cluster")
    with pytest.raises(ValidationError, match="LABELLOOP_S3_ACCESS_KEY, LABELLOOP_S3_SECRET_KEY"):
        Settings()
    monkeypatch.setenv("LABELLOOP_S3_ACCESS_KEY", "access-from-a-k8s-secret")
    monkeypatch.setenv("LABELLOOP_S3_SECRET_KEY", "s3cret-from-a-k8s-secret")
    monkeypatch.setenv("LABELLOOP_ADMIN_TOKEN", "short-token")
    with pytest.raises(ValidationError, match="at least 32"):
        Settings()
    monkeypatch.setenv("LABELLOOP_ADMIN_TOKEN", "0123456789abcdef" * 4)
    monkeypatch.setenv("LABELLOOP_KAFKA_ALLOW_UNAUTHENTICATED", "true")  # Kafka: its own test
    assert Settings().environment == "cluster"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com"])
def test_local_settings_never_serve_other_machines(host: str) -> None:
    """The image's `docker run -p 8080:8080` with local defaults must not take a known token."""
    with pytest.raises(ValidationError, match="serves other machines"):
        Settings(api_host=host)
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert Settings(api_host=loopback).api_host == loopback


def test_the_score_floor_may_not_hide_served_boxes() -> None:
    with pytest.raises(ValidationError, match="ASSIST_SCORE_FLOOR"):
        Settings(assist_score_floor=0.3, serve_conf=0.25)
    assert Settings(assist_score_floor=0.25, serve_conf=0.25).assist_score_floor == 0.25
