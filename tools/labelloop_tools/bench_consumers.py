"""``make bench``'s ``consumers`` section: events per second each consumer handles on one core.

Each service runs alone as ``labelloop serve --service NAME`` (as its pod would), pinned to one
CPU (``sched_setaffinity``), on topics and a SQLite database of its own. Once its consumer
group has joined, a burst of events it really handles is produced, and the clock runs until
the group's lag (what KEDA scales on) is back to zero. ingest's figure is the ``ingest``
section's (each of its events is an object fetched from MinIO and decoded).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from rich.console import Console

from labelloop.composition import load_service
from labelloop.config import Settings
from labelloop.messaging.lag import consumer_lag
from labelloop.messaging.security import kafka_client_options, kafka_security_options
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import free_port
from schemas.envelope import CloudEvent
from schemas.events import (
    FrameLabels,
    FrameProcessed,
    FrameProcessedData,
    LabeledBox,
    LabelsSubmitted,
    LabelsSubmittedData,
)
from schemas.topics import Topic

EVENTS = 5000
REQUIRED_PER_S = 2000
CORE = 0


def frame_processed_event(index: int, task_id: str) -> CloudEvent[Any]:
    return FrameProcessed.create(
        FrameProcessedData(
            task_id=task_id,
            frame=f"f{index:06d}.jpg",
            object_key=f"tasks/{task_id}/data/f{index:06d}.jpg",
            sha256=hashlib.sha256(str(index).encode()).hexdigest(),
            width=640,
            height=480,
            size_bytes=50_000,
            format="JPEG",
        ),
        source="/bench",
        key=(task_id, index),
        taskid=task_id,
    )


def labels_submitted_event(index: int, task_id: str) -> CloudEvent[Any]:
    box = LabeledBox(label="car", x=10, y=10, w=50, h=40)
    return LabelsSubmitted.create(
        LabelsSubmittedData(
            task_id=task_id,
            job_id=f"{task_id}-job",
            annotations=[FrameLabels(frame=f"f{index:06d}.jpg", boxes=[box])],
            submitted_by="bench",
            labeled_frames=index + 1,
        ),
        source="/bench",
        key=(task_id, index),
        taskid=task_id,
    )


WORKLOADS: dict[str, tuple[Topic, Callable[[int, str], CloudEvent[Any]]]] = {
    "api": (Topic.INGEST_EVENTS, frame_processed_event),  # the timeline projection
    "labeler-assist": (Topic.INGEST_EVENTS, frame_processed_event),  # frame sizes for validation
    "webhooks": (Topic.INGEST_EVENTS, frame_processed_event),  # matched against subscriptions
    "trainer": (Topic.LABELS_EVENTS, labels_submitted_event),  # its copy of the labels
}
"""Per service: the topic and an event it handles (each one a database transaction)."""


def _measure(settings: Settings, service: str, workdir: Path) -> float:
    topic, make_event = WORKLOADS[service]
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    scoped = settings.model_copy(update={"kafka_topic_prefix": prefix})
    asyncio.run(create_topics(scoped, topic_names(scoped)))
    port = free_port()
    env = {
        **os.environ,
        **scoped.as_env(),
        "LABELLOOP_DATABASE_URL": f"sqlite:///{workdir}/{service}.db",
        "LABELLOOP_API_PORT": str(port),
        "LABELLOOP_VAR_DIR": str(workdir / service),
        "LABELLOOP_TRITON_ENABLED": "false",
        "LABELLOOP_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "labelloop", "serve", "--service", service]
    with (workdir / f"{service}.log").open("wb") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        os.sched_setaffinity(process.pid, {CORE})  # before it starts any thread
        try:
            task_id = "bench-" + prefix.rstrip(".")
            events = [make_event(index, task_id) for index in range(EVENTS)]
            return asyncio.run(
                _drive(
                    settings,
                    process,
                    f"http://127.0.0.1:{port}/readyz",
                    scoped.consumer_group(load_service(service).IDENTITY.consumer_group),
                    scoped.topic(topic),
                    events,
                )
            )
        finally:
            process.terminate()
            process.wait(timeout=30)


async def _drive(
    settings: Settings,
    process: subprocess.Popen[bytes],
    ready_url: str,
    group: str,
    topic: str,
    events: list[CloudEvent[Any]],
) -> float:
    """Send the burst once the service is ready; events/s until its lag is back to zero."""
    await _wait_ready(ready_url, process)
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        start = time.perf_counter()
        for event in events:
            await producer.send(topic, event.model_dump_json().encode(), key=b"bench")
        await producer.flush()  # sends are batched by the producer; acks awaited here
    finally:
        await producer.stop()
    while True:
        lag = await consumer_lag(
            settings.kafka_bootstrap_servers,
            group,
            [topic],
            security=kafka_security_options(settings),
        )
        if lag.get(topic) == 0:
            return len(events) / (time.perf_counter() - start)
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        await asyncio.sleep(0.05)


async def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the service exited with {process.returncode}")
            try:
                if (await client.get(url, timeout=2)).status_code == 200:
                    await asyncio.sleep(3)  # its consumer group joins
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not ready")


def bench_consumers(settings: Settings, console: Console) -> dict[str, Any]:
    workdir = (settings.var_dir / "bench-consumers").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {
        "events": EVENTS,
        "cpu": f"one core (#{CORE})",
        "required_events_per_s": REQUIRED_PER_S,
    }
    for service in WORKLOADS:
        rate = _measure(settings, service, workdir)
        figures[service] = round(rate, 1)
        console.log(f"consumers: {service} {rate:.0f} events/s on one core")
    return figures
