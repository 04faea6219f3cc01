"""Faults on the real stack, each case twice: the object store stopped for 10 s and the Kafka broker
restarted in the middle of a task, a webhook receiver down for 30 s. Afterwards no frame is
lost, no job is made twice, and every event reaches the receiver once (deduplicated by the
delivery id it would dedupe on)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import Component, free_port
from labelloop.stack.manager import Stack
from schemas.events import JobCreated, JobCreatedData
from schemas.topics import Topic
from tests.integration.harness import (
    WebhookReceiver,
    make_frames,
    service_process,
    wait_http_ready,
    wait_until,
)

pytestmark = pytest.mark.integration

FRAMES = 60
SEGMENT = 10


def component(stack: Stack, name: str) -> Component:
    return next(c for c in stack.components if c.name == name)


@contextmanager
def stopped(stack: Stack, name: str, seconds: float) -> Iterator[None]:
    """Stop a stack component for ``seconds`` (its data stays), then start it again."""
    target = component(stack, name)
    assert target.daemon.stop(), f"{name} was not running"
    try:
        yield
        time.sleep(seconds)
    finally:
        argv, env = target.command()
        target.daemon.start(argv, env=env)
        assert wait_until(target.healthy, timeout_s=120, interval_s=0.25), f"{name} restart"
        target.after_start(lambda line: None)


def start_task(client: LabelloopClient, folder: Path, name: str) -> str:
    """Create a task and upload its frames and manifest; return without waiting for jobs."""
    task = client.request(
        "POST", "/api/tasks", json={"name": name, "labels": ["car"], "segment_size": SEGMENT}
    )
    client.upload(task["id"], make_frames(folder, FRAMES))
    return str(task["id"])


def assert_task_complete(client: LabelloopClient, task_id: str) -> None:
    def jobs_ready() -> bool:
        """The timeline has both ends: it reads each topic on its own, so wait for each."""
        events = {e["type"] for e in client.request("GET", f"/api/tasks/{task_id}/events")}
        return {"io.labelloop.task.jobs-ready.v1", "io.labelloop.task.data-ready.v1"} <= events

    assert wait_until(jobs_ready, timeout_s=240, interval_s=1), client.request(
        "GET", f"/api/tasks/{task_id}/frames"
    )
    frames = client.request("GET", f"/api/tasks/{task_id}/frames")
    assert frames["processed"] == FRAMES and frames["rejected"] == 0, "no frame lost"
    assert len({f["name"] for f in frames["frames"]}) == FRAMES
    jobs = client.request("GET", f"/api/tasks/{task_id}/jobs")
    assert [(j["start_frame"], j["stop_frame"]) for j in jobs] == [
        (start, start + SEGMENT - 1) for start in range(0, FRAMES, SEGMENT)
    ], "each job once"
    events = client.request("GET", f"/api/tasks/{task_id}/events")
    created = [e for e in events if e["type"] == "io.labelloop.job.created.v1"]
    assert len(created) == len(jobs) == len({e["id"] for e in created})
    ready = [e for e in events if e["type"] == "io.labelloop.task.data-ready.v1"]
    assert len(ready) == 1


@pytest.mark.object_store
@pytest.mark.parametrize("round_", [1, 2])
def test_object_store_down_for_10s_mid_task(
    stack: Stack, client: LabelloopClient, tmp_path: Path, round_: int
) -> None:
    task_id = start_task(client, tmp_path, f"minio-down-{round_}")
    with stopped(stack, stack.s3.name, seconds=10):
        pass  # ingest is fetching these frames while the store is gone
    assert_task_complete(client, task_id)


@pytest.mark.object_store
@pytest.mark.parametrize("round_", [1, 2])
def test_kafka_restarted_mid_task(
    stack: Stack, client: LabelloopClient, tmp_path: Path, round_: int
) -> None:
    task_id = start_task(client, tmp_path, f"kafka-restart-{round_}")
    with stopped(stack, "kafka", seconds=2):
        pass
    assert_task_complete(client, task_id)


def _reserved_port() -> int:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there: connections are refused
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


@pytest.mark.parametrize("round_", [1, 2])
async def test_receiver_down_for_30s_gets_every_event_once(
    stack: Stack,
    test_settings: Settings,
    tmp_path: Path,
    database_url: str,
    unique: str,
    round_: int,
) -> None:
    await create_topics(test_settings, topic_names(test_settings))
    api_port, receiver_port = free_port(), _reserved_port()
    env = {
        "LABELLOOP_KAFKA_TOPIC_PREFIX": test_settings.kafka_topic_prefix,
        "LABELLOOP_DATABASE_URL": database_url,
        "LABELLOOP_API_PORT": str(api_port),
        "LABELLOOP_VAR_DIR": str(tmp_path / "var"),
        # retries that outlast a 30 s outage: 1, 2, 4, 8, 16, 32 s (±25 %)
        "LABELLOOP_WEBHOOK_RETRY_BASE_S": "1",
        "LABELLOOP_WEBHOOK_MAX_ATTEMPTS": "8",
    }
    base = f"http://127.0.0.1:{api_port}"
    headers = {"Authorization": f"Bearer {test_settings.admin_token}"}
    with service_process(["webhooks"], env, tmp_path / "webhooks.log"):
        assert wait_http_ready(f"{base}/readyz", 90)
        subscription = httpx.post(
            f"{base}/api/webhooks",
            headers=headers,
            json={
                "url": f"http://127.0.0.1:{receiver_port}/down",
                "events": ["io.labelloop.job.created.v1"],
            },
            timeout=30,
        )
        assert subscription.status_code == 201, subscription.text
        events = [
            JobCreated.create(
                JobCreatedData(
                    job_id=f"{unique}-{index}",
                    task_id=f"down{unique}",
                    start_frame=index,
                    stop_frame=index,
                    frames=[f"f{index}.jpg"],
                ),
                source="/tests",
                key=(unique, index),
                taskid=f"down{unique}",
            )
            for index in range(20)
        ]
        producer = AIOKafkaProducer(bootstrap_servers=test_settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            for event in events:
                await producer.send_and_wait(
                    test_settings.topic(Topic.JOBGEN_EVENTS),
                    event.model_dump_json().encode(),
                    key=event.taskid.encode() if event.taskid else None,
                )
        finally:
            await producer.stop()
        time.sleep(30)  # the receiver is down: every attempt so far was refused
        receiver = WebhookReceiver(port=receiver_port)
        try:
            assert wait_until(
                lambda: (
                    {json.loads(r.body)["id"] for r in receiver.at("/down")}
                    == {e.id for e in events}
                ),
                timeout_s=120,
                interval_s=0.5,
            ), f"{len(receiver.at('/down'))} requests arrived"
            by_delivery: dict[str, set[str]] = {}
            for request in receiver.at("/down"):
                by_delivery.setdefault(request.headers["webhook-id"], set()).add(
                    json.loads(request.body)["id"]
                )
            # deduplicated by delivery id, the receiver counts each event exactly once
            assert len(by_delivery) == len(events)
            assert all(len(ids) == 1 for ids in by_delivery.values())
            deliveries = httpx.get(
                f"{base}/api/webhooks/{subscription.json()['id']}/deliveries",
                headers=headers,
                timeout=30,
            ).json()
            assert len(deliveries) == len(events)
            assert all(d["status"] == "delivered" and d["attempts"] >= 2 for d in deliveries)
        finally:
            receiver.close()
