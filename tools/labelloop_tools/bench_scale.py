"""``make bench``'s ``scale`` section: tasks of 1,000, 10,000 and 100,000 small frames.

Each size runs on a deployment of its own: every service in its own process (as pods are),
a fresh SQLite database and topics of its own, on the running stack's Kafka and object store
(it reads the store's shared notification topic with consumer groups of its own). The frames
(~1 KB JPEGs, all distinct) are PUT straight to the store by 10 threads, then the manifest;
what is measured:

* last upload → ``task.jobs-ready`` (read from the database the services write);
* ingest's pace: frames recorded per second between the first and the last frame's outcome;
* each service's peak memory (the kernel's high-water mark of its resident set, ``VmHWM``);
* the task's rows (frames, jobs) and the events recorded for it.

Cost should grow linearly with the frame count and memory stay flat; the figures say whether
it does.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from rich.console import Console
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.messaging.security import kafka_client_options
from labelloop.stack.base import free_port
from labelloop.storage import ObjectStore
from labelloop_tools.plots import pyplot, save
from schemas.topics import Topic

SIZES = (1_000, 10_000, 100_000)
SERVICES = ("api", "ingest", "jobgen", "webhooks", "labeler-assist", "trainer")
UPLOAD_THREADS = 10
"""As many as the store client's connection pool holds (urllib3's default of 10)."""


def tiny_frame(index: int) -> bytes:
    """A distinct ~1 KB JPEG."""
    image = Image.new("RGB", (48, 36), (index % 251, (index // 251) % 251, 40))
    image.putpixel((index % 48, (index // 48) % 36), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float:
    """The process's resident-set high-water mark, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


async def _skip_history(settings: Settings) -> None:
    """Commit the end of the shared notification topic for the deployment's ingest group, so
    it starts with this run's uploads instead of every notification the store ever sent."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from ingest import IDENTITY

    topic = settings.topic(Topic.STORAGE_OBJECTS)
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        group_id=settings.consumer_group(IDENTITY.consumer_group),
        enable_auto_commit=False,
    )
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    if not partitions:
        return
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.commit({tp: offset for tp, offset in ends.items()})
    finally:
        await consumer.stop()


@contextmanager
def deployment(
    settings: Settings, folder: Path, services: tuple[str, ...] = SERVICES
) -> Iterator[tuple[Settings, dict[str, int], ExitStack]]:
    """``services``, each in its own process, on a database and topics of their own; yields
    the deployment's settings, each service's pid, and the stack that stops them (to start
    more with :func:`start_service`)."""
    prefix = f"scale{uuid.uuid4().hex[:8]}."
    scoped = settings.model_copy(
        update={
            "kafka_topic_prefix": prefix,
            "kafka_group_prefix": prefix,
            "kafka_storage_topic": settings.topic(Topic.STORAGE_OBJECTS),
            "database_url": f"sqlite:///{folder}/scale.db",
            "api_port": free_port(),
        }
    )
    asyncio.run(_skip_history(scoped))
    pids: dict[str, int] = {}
    with ExitStack() as stack:
        for name in services:
            pids[name] = start_service(scoped, name, folder, stack)
        yield scoped, pids, stack


def start_service(scoped: Settings, name: str, folder: Path, stack: ExitStack) -> int:
    """Start ``name`` in a process of its own (stopped when ``stack`` closes) and wait until
    it answers; its pid."""
    env = {**os.environ, **scoped.as_env()}
    if name != "api":
        env["LABELLOOP_API_PORT"] = str(free_port())
    log = stack.enter_context((folder / f"{name}.log").open("ab"))
    process = subprocess.Popen(
        [sys.executable, "-m", "labelloop", "serve", "--service", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, process)
    _wait_ready(f"http://127.0.0.1:{env['LABELLOOP_API_PORT']}/healthz", process)
    return process.pid


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a service exited with {process.returncode} while starting")
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def new_task(scoped: Settings, frames: int) -> str:
    api = f"http://127.0.0.1:{scoped.api_port}"
    headers = {"Authorization": f"Bearer {scoped.admin_token}"}
    with httpx.Client(base_url=api, headers=headers, timeout=60, trust_env=False) as client:
        body = {"name": f"scale-{frames}", "labels": ["box"], "segment_size": 500}
        answer = client.post("/api/tasks", json=body)
        answer.raise_for_status()
        return str(answer.json()["id"])


def upload_frames(scoped: Settings, task_id: str, frames: int, console: Console) -> None:
    """The frames by ``UPLOAD_THREADS`` threads straight to the store, then the manifest."""
    store = ObjectStore.from_settings(scoped)
    names = [f"f{index:06d}.jpg" for index in range(frames)]
    blobs = [tiny_frame(index) for index in range(frames)]
    console.log(f"scale: {frames} frames ({sum(map(len, blobs)) / frames:.0f} B each)")
    with ThreadPoolExecutor(UPLOAD_THREADS) as uploaders:
        list(
            uploaders.map(
                lambda pair: store.put_bytes(f"tasks/{task_id}/data/{pair[0]}", pair[1]),
                zip(names, blobs, strict=True),
            )
        )
    store.put_bytes(f"tasks/{task_id}/manifest.json", json.dumps({"files": names}).encode())


def _jobs_ready_at(engine: Engine, task_id: str, deadline: float) -> float | None:
    """When the api's timeline logged the task's ``task.jobs-ready`` (monotonic), or None."""
    from labelloop.timeline import EventRecord

    while time.monotonic() < deadline:
        with Session(engine) as session:
            ready = session.exec(
                select(func.count())
                .select_from(EventRecord)
                .where(
                    EventRecord.task_id == task_id,
                    EventRecord.type == "io.labelloop.task.jobs-ready.v1",
                )
            ).one()
        if ready:
            return time.monotonic()
        time.sleep(0.25)
    return None


def task_counts(engine: Engine, task_id: str) -> dict[str, Any]:
    """The task's rows and events, and the span of its frames' processing."""
    from ingest.models import Frame
    from jobgen.models import Job
    from labelloop.messaging.outbox import OutboxMessage
    from labelloop.timeline import EventRecord

    def count(model: Any, *where: Any) -> int:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())

    with Session(engine) as session:
        first, last = session.exec(
            select(func.min(Frame.processed_at), func.max(Frame.processed_at)).where(
                Frame.task_id == task_id
            )
        ).one()
        return {
            "span_s": (last - first).total_seconds() if first and last and last > first else 0.0,
            "rows": {
                "frames": count(Frame, Frame.task_id == task_id),
                "jobs": count(Job, Job.task_id == task_id),
                "events_recorded": count(OutboxMessage),
            },
            "timeline_events": count(EventRecord, EventRecord.task_id == task_id),
        }


def _one_size(settings: Settings, frames: int, console: Console) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, deployment(settings, Path(tmp)) as (scoped, pids, _):
        task_id = new_task(scoped, frames)
        started = time.monotonic()
        upload_frames(scoped, task_id, frames, console)
        uploaded = time.monotonic()
        engine = get_engine(scoped.database_url)
        ready_at = _jobs_ready_at(engine, task_id, uploaded + 3600)
        if ready_at is None:
            raise RuntimeError(f"task of {frames} frames not ready an hour after its upload")
        memory = {name: peak_rss_mb(pid) for name, pid in pids.items()}
        counts = task_counts(engine, task_id)
        engine.dispose()
    span_s = counts.pop("span_s")
    return {
        "frames": frames,
        "upload_s": round(uploaded - started, 1),
        "upload_frames_per_s": round(frames / (uploaded - started), 1),
        "last_upload_to_jobs_ready_s": round(ready_at - uploaded, 2),
        "first_upload_to_jobs_ready_s": round(ready_at - started, 1),
        "ingest_frames_per_s": round((frames - 1) / span_s, 1) if span_s else None,
        "peak_rss_mb": memory,
        **counts,
        "ms_per_frame_end_to_end": round((ready_at - started) * 1000 / frames, 3),
    }


def plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """The curve as an SVG: time to ``task.jobs-ready`` and each service's peak memory against
    the frame count (log axes); None without matplotlib (it comes with the trainer's extra)."""
    plt = pyplot()
    if plt is None:
        return None
    sizes = [run["frames"] for run in runs]
    figure, (times, memory) = plt.subplots(1, 2, figsize=(10, 4))
    ready = [run["first_upload_to_jobs_ready_s"] for run in runs]
    times.plot(sizes, ready, "o-", label="first upload → jobs-ready")
    times.plot(sizes, [run["upload_s"] for run in runs], "s--", label="upload (10 threads)")
    times.set(xscale="log", yscale="log", xlabel="frames in the task", ylabel="seconds")
    times.legend()
    for service in SERVICES:
        memory.plot(sizes, [run["peak_rss_mb"][service] for run in runs], "o-", label=service)
    memory.set(xscale="log", xlabel="frames in the task", ylabel="peak RSS (MiB)", ylim=(0, None))
    memory.legend(fontsize="small")
    figure.suptitle("labelloop: one task of N frames, each service in its own process")
    return save(plt, figure, path)


def bench_scale(settings: Settings, console: Console) -> dict[str, Any]:
    """The curve over :data:`SIZES` (``LABELLOOP_BENCH_SCALE_SIZES`` overrides, comma-separated);
    its plot is written to ``var/bench-scale.svg``."""
    configured = os.environ.get("LABELLOOP_BENCH_SCALE_SIZES", "")
    sizes = tuple(int(size) for size in configured.split(",") if size) or SIZES
    runs = [_one_size(settings, frames, console) for frames in sizes]
    drawn = plot(runs, settings.var_dir / "bench-scale.svg")
    return {
        "runs": runs,
        "services": list(SERVICES),
        "frame_bytes": "~1 KB JPEG (48x36)",
        "note": "each size on fresh service processes; memory is each process's VmHWM",
        "plot": str(drawn) if drawn else None,
    }
