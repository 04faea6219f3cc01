"""`labelloop topics` (the chart's post-install hook) creates every topic and DLQ, once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from labelloop.config import Settings
from labelloop.messaging.topics import topic_names
from labelloop.stack.manager import Stack

pytestmark = pytest.mark.integration


def run_topics(settings: Settings) -> str:
    env = {**os.environ, "LABELLOOP_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix}
    result = subprocess.run(
        [sys.executable, "-m", "labelloop", "topics"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stderr


async def test_topics_are_created_for_the_audit_log(stack: Stack, test_settings: Settings) -> None:
    first = run_topics(test_settings)
    expected = topic_names(test_settings)
    assert "created" in first
    admin = AIOKafkaAdminClient(bootstrap_servers=test_settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        assert set(expected) <= set(await admin.list_topics())
        described = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in expected]
        )
        retention = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["retention.ms"]
            for response in described
            for resource in response.resources
        }
        assert retention == dict.fromkeys(expected, "-1")
    finally:
        await admin.close()
    assert "every topic exists" in run_topics(test_settings)  # a second run changes nothing
