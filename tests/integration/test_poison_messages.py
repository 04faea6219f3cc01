"""Every consumer of every topic, in the real ``labelloop serve`` process: a message that is not
JSON, one that is not a known event, and one of an unknown version each go to the topic's DLQ,
once per consumer group, untouched and with the error; the services keep running."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from labelloop.composition import load_service, service_names
from labelloop.config import Settings
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import free_port
from labelloop.stack.manager import Stack
from schemas.events import EVENTS_BY_TOPIC, TaskCreated, TaskCreatedData
from schemas.topics import Topic, dlq_topic
from tests.integration.harness import service_process, wait_http_ready
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


def consumer_groups_of(topic: Topic) -> int:
    """How many consumer groups read ``topic``, from the services' own declarations."""
    return sum(topic in load_service(name).subscribers.topics for name in service_names())


def poison_for(topic: Topic, marker: str) -> dict[str, bytes]:
    """Three bad messages for ``topic``, by what is wrong with them."""
    bad = {
        "not-json": f"{marker} is not JSON {{".encode(),
        "not-an-event": json.dumps({"marker": marker, "hello": "world"}).encode(),
    }
    if topic in EVENTS_BY_TOPIC:
        sample = TaskCreated.create(
            TaskCreatedData(
                task_id=marker,
                name="poison",
                labels=["car"],
                segment_size=0,
                overlap=0,
                label_threshold=10,
                priority=2,
                created_by="test",
            ),
            source="/tests",
            key=(marker,),
        ).model_dump(mode="json")
        event_type = EVENTS_BY_TOPIC[topic][0].model_fields["type"].default
        sample["type"] = event_type.removesuffix(".v1") + ".v9"  # a version nobody knows
        bad["unknown-version"] = json.dumps(sample).encode()
    return bad


async def test_bad_messages_on_every_topic_go_to_its_dlq(
    stack: Stack, test_settings: Settings, tmp_path: Path, database_url: str, unique: str
) -> None:
    await create_topics(test_settings, topic_names(test_settings))
    port = free_port()
    env = {
        "LABELLOOP_KAFKA_TOPIC_PREFIX": test_settings.kafka_topic_prefix,
        "LABELLOOP_DATABASE_URL": database_url,
        "LABELLOOP_API_PORT": str(port),
        "LABELLOOP_VAR_DIR": str(tmp_path / "var"),
        "LABELLOOP_TRITON_ENABLED": "false",
    }
    log = tmp_path / "serve.log"
    with service_process([], env, log) as serve:
        assert wait_http_ready(f"http://127.0.0.1:{port}/readyz", 90), log.read_text()[-3000:]
        time.sleep(3)  # every consumer group joins before the poison arrives
        producer = AIOKafkaProducer(bootstrap_servers=test_settings.kafka_bootstrap_servers)
        await producer.start()
        sent: dict[Topic, dict[str, bytes]] = {}
        try:
            for topic in Topic:
                sent[topic] = poison_for(topic, f"poison-{unique}-{topic.name.lower()}")
                for payload in sent[topic].values():
                    await producer.send_and_wait(
                        test_settings.topic(topic), payload, key=unique.encode()
                    )
        finally:
            await producer.stop()

        for topic, payloads in sent.items():
            groups = consumer_groups_of(topic)
            assert groups >= 1, f"nobody consumes {topic}"
            expected = groups * len(payloads)
            dead = await read_topic(
                test_settings.kafka_bootstrap_servers,
                dlq_topic(test_settings.topic(topic)),
                expect=expected,
                timeout_s=60,
                settle_s=2,
            )
            copies = Counter(record.value for record in dead)
            for kind, payload in payloads.items():
                # untouched, once per consumer group (no consumer dead-letters it twice)
                assert copies[payload] == groups, (topic, kind, copies[payload], groups)
            for record in dead:
                headers = dict(record.headers)
                assert headers["dlq-original-topic"] == test_settings.topic(topic).encode()
                assert headers["dlq-error"], "the error travels with the message"
        assert serve.poll() is None, "no consumer died of bad input"
        assert wait_http_ready(f"http://127.0.0.1:{port}/readyz", 10)
