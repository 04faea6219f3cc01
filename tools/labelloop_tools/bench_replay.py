"""``make bench``'s ``replay`` section: events per second ``labelloop replay`` rebuilds.

A synthetic history (tasks, their frames, jobs, one label submission and one pre-annotation
per frame) is produced to topics of the bench's own, then replayed by the same code as the
command into a fresh SQLite database (the embedded default) and into a fresh database on a
throwaway PostgreSQL server (:mod:`labelloop_tools.postgres`, on a port and folder of its
own, so a test run's server is never touched).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer
from rich.console import Console

from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.messaging.security import kafka_client_options
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.replay import ReplayStats, replay
from labelloop.stack.base import free_port
from labelloop_tools.bench_consumers import frame_processed_event, labels_submitted_event
from labelloop_tools.postgres import PostgresServer
from schemas.envelope import CloudEvent
from schemas.events import (
    JobCreated,
    JobCreatedData,
    PreannotationReady,
    PreannotationReadyData,
    PredictedBox,
    TaskCreated,
    TaskCreatedData,
)
from schemas.topics import topic_of

TASKS, FRAMES, SEGMENT = 20, 250, 50
SETTLE_S = 5.0
"""A pause between producing the history and replaying it: the broker is still writing out
the burst it just took, which on a small machine takes the replay's cores (the first replay
ran at two thirds of its pace); a replay reads a history written long before."""


def synthetic_history(task_id: str) -> Iterator[CloudEvent[Any]]:
    """One task's events in the order the services record them: the task, its frames, its
    jobs, then a label submission and a pre-annotation per frame."""
    yield TaskCreated.create(
        TaskCreatedData(
            task_id=task_id,
            name="bench",
            labels=["car"],
            segment_size=SEGMENT,
            overlap=0,
            label_threshold=1000,
            priority=2,
            created_by="bench",
        ),
        source="/bench",
        key=(task_id,),
        taskid=task_id,
    )
    for index in range(FRAMES):
        yield frame_processed_event(index, task_id)
    for start in range(0, FRAMES, SEGMENT):
        yield JobCreated.create(
            JobCreatedData(
                job_id=f"{task_id}-{start}",
                task_id=task_id,
                start_frame=start,
                stop_frame=start + SEGMENT - 1,
                frames=[f"f{index:06d}.jpg" for index in range(start, start + SEGMENT)],
            ),
            source="/bench",
            key=(task_id, start),
            taskid=task_id,
        )
    box = PredictedBox(label="car", x=10, y=12, w=40, h=30, score=0.9)
    for index in range(FRAMES):
        yield labels_submitted_event(index, task_id)
        yield PreannotationReady.create(
            PreannotationReadyData(
                task_id=task_id,
                frame=f"f{index:06d}.jpg",
                model_version=1,
                boxes=3,
                predictions=[box, box, box],
                backend="onnxruntime",
            ),
            source="/bench",
            key=(task_id, index),
            taskid=task_id,
        )


async def _produce(settings: Settings) -> int:
    await create_topics(settings, topic_names(settings))
    producer = AIOKafkaProducer(**kafka_client_options(settings), linger_ms=5)
    await producer.start()
    sent = 0
    try:
        for task in range(TASKS):
            task_id = f"bench{task}"
            for event in synthetic_history(task_id):
                topic = settings.topic(topic_of(event.type))
                await producer.send(topic, event.model_dump_json().encode(), key=task_id.encode())
                sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def bench_replay(settings: Settings, console: Console) -> dict[str, Any]:
    scoped = settings.model_copy(update={"kafka_topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
    produced = asyncio.run(_produce(scoped))
    time.sleep(SETTLE_S)
    console.log(f"replay: {produced} events produced; replaying into a fresh SQLite database")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/replay.db"
        first = _replayed(scoped, url, produced)
        again = asyncio.run(replay(scoped, url, projections=projections()))
    console.log("replay: into a fresh PostgreSQL database")
    return {
        "events": produced,
        "database": "sqlite",
        "events_per_s": round(first.events_per_s, 1),
        "applying_events_per_s": round(first.applying_events_per_s, 1),
        "required_events_per_s": 10_000,
        "seconds": round(first.seconds, 2),
        "already_applied_events_per_s": round(again.events_per_s, 1),
        **_postgresql(scoped, produced),
    }


def _replayed(settings: Settings, url: str, produced: int) -> ReplayStats:
    stats = asyncio.run(replay(settings, url, projections=projections()))
    if stats.applied != produced:
        raise RuntimeError(f"replay applied {stats.applied} of the {produced} events produced")
    return stats


def _postgresql(settings: Settings, produced: int) -> dict[str, Any]:
    """The same replay into a fresh PostgreSQL database (Debian's binaries; where they are
    missing, the figure is None and the reason is given)."""
    server = PostgresServer(settings.var_dir.resolve() / "bench-pg", port=free_port())
    figures: dict[str, Any] = {"postgresql_required_events_per_s": 5_000}
    try:
        server.start()
    except RuntimeError as missing:  # no PostgreSQL installed
        return {"postgresql_events_per_s": None, **figures, "postgresql_skipped": str(missing)}
    try:
        url = server.new_database()
        stats = _replayed(settings, url, produced)
        get_engine(url).dispose()  # before its server goes
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
    return {
        "postgresql_events_per_s": round(stats.events_per_s, 1),
        **figures,
        "postgresql_applying_events_per_s": round(stats.applying_events_per_s, 1),
        "postgresql_seconds": round(stats.seconds, 2),
    }
