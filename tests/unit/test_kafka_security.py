"""Kafka security settings: half-given or unauthenticated ones are refused, and every client
labelloop makes (the FastStream broker and the raw aiokafka ones) connects as they say."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import ValidationError

from labelloop.config import Settings
from labelloop.messaging.broker import create_broker
from labelloop.messaging.security import (
    KafkaSecurityError,
    kafka_client_options,
    kafka_security_options,
)
from tests.tls import Certificates, make_certificates

REPO = Path(__file__).resolve().parents[2]
CLUSTER: dict[str, Any] = {
    "environment": "cluster",
    "s3_access_key": "access-from-a-k8s-secret",
    "s3_secret_key": "s3cret-from-a-k8s-secret",
    "admin_token": "0123456789abcdef" * 4,
}
SCRAM: dict[str, Any] = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_mechanism": "SCRAM-SHA-512",
    "kafka_sasl_username": "labelloop",
    "kafka_sasl_password": "kafka-password-from-a-secret",
}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_local_defaults_stay_plaintext() -> None:
    settings = Settings()
    assert settings.kafka_security_protocol == "PLAINTEXT"
    assert kafka_security_options(settings) == {}
    assert kafka_client_options(settings) == {"bootstrap_servers": settings.kafka_bootstrap_servers}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param(
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "needs LABELLOOP_KAFKA_SASL_USERNAME and LABELLOOP_KAFKA_SASL_PASSWORD",
            id="sasl-without-password",
        ),
        pytest.param(
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_password": "p"},
            "needs LABELLOOP_KAFKA_SASL_USERNAME",
            id="sasl-without-username",
        ),
        pytest.param(
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "sends no SASL credentials",
            id="credentials-on-plaintext",
        ),
        pytest.param(
            {"kafka_security_protocol": "SSL", "kafka_sasl_username": "u"},
            "sends no SASL credentials",
            id="credentials-on-ssl",
        ),
        pytest.param(
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_ssl_cafile": "/etc/kafka/ca.crt",
            },
            "LABELLOOP_KAFKA_SSL_CAFILE given but",
            id="ca-without-tls",
        ),
        pytest.param(
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "/etc/kafka/tls.crt"},
            "go together",
            id="cert-without-key",
        ),
        pytest.param(
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/kafka/tls.key"},
            "go together",
            id="key-without-cert",
        ),
    ],
)
def test_half_given_security_is_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(**values)


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="plaintext"),
        pytest.param({"kafka_security_protocol": "SSL"}, id="tls-without-client-certificate"),
    ],
)
def test_a_cluster_refuses_clients_that_authenticate_nothing(values: dict[str, Any]) -> None:
    """Anyone who reaches such a broker could write events the webhooks service signs."""
    with pytest.raises(ValidationError, match="authenticates no client"):
        Settings(**CLUSTER, **values)
    allowed = Settings(**CLUSTER, **values, kafka_allow_unauthenticated=True)
    assert allowed.kafka_allow_unauthenticated is True


def test_a_cluster_refuses_a_password_in_clear() -> None:
    plain = {**SCRAM, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}
    with pytest.raises(ValidationError, match="password in clear"):
        Settings(**CLUSTER, **plain)
    assert Settings(**plain).kafka_sasl_mechanism == "PLAIN"  # local use may


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(SCRAM, id="sasl-ssl-scram"),
        pytest.param({**SCRAM, "kafka_security_protocol": "SASL_PLAINTEXT"}, id="scram-no-tls"),
        pytest.param(
            {
                "kafka_security_protocol": "SSL",
                "kafka_ssl_certfile": "/etc/kafka/tls.crt",
                "kafka_ssl_keyfile": "/etc/kafka/tls.key",
            },
            id="mutual-tls",
        ),
    ],
)
def test_a_cluster_accepts_authenticated_clients(values: dict[str, Any]) -> None:
    assert Settings(**CLUSTER, **values).environment == "cluster"


def test_the_password_is_never_shown_but_reaches_child_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(**SCRAM)
    secret = SCRAM["kafka_sasl_password"]
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    env = settings.as_env()
    assert env["LABELLOOP_KAFKA_SASL_PASSWORD"] == secret  # the trainer's run rebuilds them
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().kafka_sasl_password.get_secret_value() == secret


def test_sasl_ssl_options_check_the_brokers_against_the_ca(certificates: Certificates) -> None:
    settings = Settings(**SCRAM, kafka_ssl_cafile=str(certificates.ca))
    options = kafka_client_options(settings)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "labelloop",
        "sasl_plain_password": "kafka-password-from-a-secret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # the given CA, not only the system's


@pytest.mark.parametrize(
    ("mechanism", "protocol"),
    [("SCRAM-SHA-256", "SASL_SSL"), ("PLAIN", "SASL_SSL"), ("SCRAM-SHA-512", "SASL_PLAINTEXT")],
)
def test_each_mechanism_and_protocol_translates(mechanism: str, protocol: str) -> None:
    settings = Settings(
        **{**SCRAM, "kafka_sasl_mechanism": mechanism, "kafka_security_protocol": protocol}
    )
    options = kafka_security_options(settings)
    assert options["sasl_mechanism"] == mechanism
    assert options["security_protocol"] == protocol
    assert (options["ssl_context"] is None) == (protocol == "SASL_PLAINTEXT")


def test_mutual_tls_offers_the_client_certificate(certificates: Certificates) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(certificates.ca),
        kafka_ssl_certfile=str(certificates.cert),
        kafka_ssl_keyfile=str(certificates.key),
    )
    options = kafka_security_options(settings)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in options


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    settings = Settings(**SCRAM, kafka_ssl_cafile=str(tmp_path / "absent.crt"))
    with pytest.raises(KafkaSecurityError, match=r"LABELLOOP_KAFKA_SSL_CAFILE=.*absent\.crt"):
        kafka_client_options(settings)


async def test_every_client_kind_takes_the_options(certificates: Certificates) -> None:
    """aiokafka's producer, consumer and admin client accept the translated options as they
    are, none refused as unknown (nothing connects here: the integration test does)."""
    options = kafka_client_options(Settings(**SCRAM, kafka_ssl_cafile=str(certificates.ca)))
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options)
    admin = AIOKafkaAdminClient(**options)
    await producer.stop()
    await consumer.stop()
    await admin.close()


def test_the_broker_connects_with_the_same_options(certificates: Certificates) -> None:
    settings = Settings(**SCRAM, kafka_ssl_cafile=str(certificates.ca))
    broker = create_broker(settings, client_id="test")
    connection = broker._connection_kwargs  # what FastStream hands its aiokafka clients
    expected = kafka_security_options(settings)
    for name in ("security_protocol", "sasl_mechanism", "sasl_plain_username"):
        assert connection[name] == expected[name]
    assert connection["sasl_plain_password"] == SCRAM["kafka_sasl_password"]
    assert isinstance(connection["ssl_context"], ssl.SSLContext)
    plaintext = create_broker(Settings(), client_id="test")._connection_kwargs
    assert plaintext.get("security_protocol", "PLAINTEXT") == "PLAINTEXT"
    assert "sasl_plain_password" not in plaintext


AIOKAFKA_CLIENT = re.compile(r"AIOKafka(Producer|Consumer|AdminClient)\(")


def test_no_kafka_client_is_made_without_the_security_options() -> None:
    """A client given only ``bootstrap_servers=`` would connect in plaintext and without
    credentials, whatever the settings say: every one takes the shared options."""
    offenders = []
    for folder in ("labelloop", "services"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            if not AIOKAFKA_CLIENT.search(text):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if "bootstrap_servers=" in line and "security" not in path.name:
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
