"""A real broker with only a SASL_SSL (SCRAM-SHA-512) listener for clients: labelloop's broker,
topics command, lag reader and readiness check connect with the settings' credentials, and a
client without them, with a wrong password, or that does not trust the broker's CA is refused.

The broker is the stack's Kafka (same jars, KRaft, one node) with its own config, users made
by ``kafka-storage format --add-scram``; it never touches the test stack's broker."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from labelloop.config import Settings
from labelloop.messaging.broker import create_broker
from labelloop.messaging.lag import consumer_lag
from labelloop.messaging.security import kafka_client_options, kafka_security_options
from labelloop.messaging.topics import cluster_reachable_async, create_topics
from labelloop.stack.base import free_port, port_open, require_tool
from labelloop.stack.manager import Stack
from tests.tls import make_certificates

pytestmark = pytest.mark.integration

USER, PASSWORD = "labelloop", "scram-password-for-the-test"
STORE_PASSWORD = "keystore-password"
REFUSED = (KafkaError, OSError, TimeoutError)


class SaslBroker:
    """One KRaft node: SASL_SSL for clients, plaintext loopback for its controller and itself."""

    def __init__(self, root: Path, libs: Path) -> None:
        self.root, self.libs = root, libs
        self.port, self.controller, self.internal = free_port(), free_port(), free_port()
        self.certificates = make_certificates(root / "tls")
        self.process: subprocess.Popen[bytes] | None = None

    def _java(self, main: str, *args: str) -> list[str]:
        java = require_tool("java", "Install Java 17 or newer.")
        return [java, "-Xmx384m", "-Xms384m", "-cp", f"{self.libs}/*", main, *args]

    def start(self) -> None:
        keystore = self.certificates.pkcs12(STORE_PASSWORD)
        controller = f"127.0.0.1:{self.controller}"
        listeners = (
            f"SASL_SSL://127.0.0.1:{self.port},BROKER://127.0.0.1:{self.internal},"
            f"CONTROLLER://{controller}"
        )
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": listeners,
            "advertised.listeners": listeners,
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,BROKER:PLAINTEXT,SASL_SSL:SASL_SSL"
            ),
            "inter.broker.listener.name": "BROKER",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": STORE_PASSWORD,
            "ssl.key.password": STORE_PASSWORD,
            "log.dirs": str(self.root / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        config = self.root / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool", "format", "--standalone",
                f"--cluster-id={cluster_id}", "-c", str(config),
                "--add-scram", f"SCRAM-SHA-512=[name={USER},password={PASSWORD}]",
            ),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        log = (self.root / "kafka.log").open("wb")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the SASL broker did not start: see {self.root}/kafka.log")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def sasl_broker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    settings = Settings()
    libs = settings.cache_dir / "kafka" / settings.kafka_version / "libs"
    assert (libs / ".complete").exists(), "the stack's start fetches the Kafka jars"
    broker = SaslBroker(tmp_path_factory.mktemp("kafka-sasl"), libs)
    broker.start()
    yield broker
    broker.stop()


def _settings(broker: SaslBroker, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "kafka_bootstrap_servers": f"127.0.0.1:{broker.port}",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": PASSWORD,
        "kafka_ssl_cafile": str(broker.certificates.ca),
        **overrides,
    }
    return Settings(**values)  # type: ignore[arg-type]


async def _refused(producer: AIOKafkaProducer) -> bool:
    try:
        await asyncio.wait_for(producer.start(), timeout=20)
    except REFUSED:
        return True
    finally:
        await producer.stop()
    return False


async def test_labelloop_clients_publish_and_read_over_sasl_ssl(sasl_broker: SaslBroker) -> None:
    settings = _settings(sasl_broker)
    topic, group = f"sasl-{uuid.uuid4().hex[:8]}", f"sasl-group-{uuid.uuid4().hex[:8]}"
    assert await cluster_reachable_async(settings)  # /readyz's check, with the credentials
    assert await create_topics(settings, [topic]) == [topic]  # `labelloop topics`
    broker = create_broker(settings, client_id="labelloop-sasl-test")
    await broker.start()
    try:
        for index in range(3):
            await broker.publish(f"event {index}".encode(), topic=topic, key=b"task")
    finally:
        await broker.stop()
    consumer = AIOKafkaConsumer(
        topic, **kafka_client_options(settings), group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records = [await asyncio.wait_for(consumer.getone(), timeout=30) for _ in range(3)]
        assert [record.value for record in records] == [b"event 0", b"event 1", b"event 2"]
        security = kafka_security_options(settings)
        assert await consumer_lag(
            settings.kafka_bootstrap_servers, group, [topic], security=security
        ) == {topic: 3}
        await consumer.commit()
        assert await consumer_lag(
            settings.kafka_bootstrap_servers, group, [topic], security=security
        ) == {topic: 0}
    finally:
        await consumer.stop()


async def test_clients_without_the_credentials_are_refused(sasl_broker: SaslBroker) -> None:
    bootstrap = f"127.0.0.1:{sasl_broker.port}"
    assert not await _refused(AIOKafkaProducer(**kafka_client_options(_settings(sasl_broker))))
    # No TLS, no SASL: what a forging pod without the Secret would try.
    assert await _refused(AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000))
    wrong = _settings(sasl_broker, kafka_sasl_password="not-the-password")
    assert await _refused(AIOKafkaProducer(**kafka_client_options(wrong)))
    assert not await cluster_reachable_async(wrong)
    # labelloop's clients check the broker too: a broker whose CA they do not trust is refused.
    untrusted = _settings(sasl_broker, kafka_ssl_cafile="")
    assert await _refused(AIOKafkaProducer(**kafka_client_options(untrusted)))
