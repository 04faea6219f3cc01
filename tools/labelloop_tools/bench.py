"""``make bench``: measured figures, written as one JSON document (``var/bench.json``)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from labelloop.config import Settings
from labelloop_tools.bench_consumers import bench_consumers
from labelloop_tools.bench_guidance import bench_active_learning, bench_label_qa
from labelloop_tools.bench_ingest import bench_ingest, bench_ingest_backlog, bench_ingest_real
from labelloop_tools.bench_replay import bench_replay
from labelloop_tools.bench_scale import bench_scale
from labelloop_tools.bench_serving import (
    bench_preannotate_640,
    bench_preannotate_batch,
    bench_retrain,
)
from labelloop_tools.bench_trainers import bench_trainer_cluster

if TYPE_CHECKING:
    from labelloop.client import LabelloopClient
    from labelloop.messaging.outbox import Transactions
    from labelloop_tools.demo import LocalReceiver
    from schemas.events import TaskDataReady

Benchmark = Callable[[Settings, Console], dict[str, Any]]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 to 100), interpolating linearly between the nearest samples."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bench_storage_to_kafka(settings: Settings, console: Console) -> dict[str, Any]:
    """MinIO put → its S3 record consumed from Kafka, sequential puts."""
    from labelloop_tools.probes import storage_round_trips

    count = 50
    console.log(f"storage_to_kafka: {count} puts")
    latencies = [lat * 1000 for _, lat in asyncio.run(storage_round_trips(settings, count))]
    return {
        "samples": count,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


def _outbox_event(index: int) -> TaskDataReady:
    """One of 50 tasks' ``task.data-ready``, a distinct event per index."""
    from schemas.events import TaskDataReady, TaskDataReadyData

    task_id = f"t{index % 50}"
    return TaskDataReady.create(
        TaskDataReadyData(task_id=task_id, frame_count=0, rejected_count=0, parts=0),
        source="/bench",
        key=(index,),
        taskid=task_id,
    )


def _recording_s(transactions: Transactions, indexes: range, batch: int) -> float:
    """Seconds to record one event per index, ``batch`` handled messages a transaction."""
    started = time.perf_counter()
    for first in range(indexes.start, indexes.stop, batch):
        chosen = range(first, min(first + batch, indexes.stop))
        with transactions.unit_of_work("bench", [str(i) for i in chosen]) as uow:
            uow.record_all([_outbox_event(i) for i in chosen])
    return time.perf_counter() - started


def bench_outbox(settings: Settings, console: Console) -> dict[str, Any]:
    """Events recorded in the outbox and relayed to Kafka by the relay, per second."""
    import tempfile

    from labelloop.db import create_tables, get_engine
    from labelloop.messaging.broker import create_broker, kafka_publisher
    from labelloop.messaging.outbox import Transactions
    from labelloop.messaging.relay import OutboxRelay
    from labelloop.messaging.topics import create_topics
    from labelloop.projections import NOTHING

    count, batch = 2000, 100
    console.log(f"outbox: {count} events one per transaction, {count} in batches of {batch}")
    bench_settings = settings.model_copy(update={"kafka_topic_prefix": f"bench{time.time_ns()}."})

    async def run() -> dict[str, Any]:
        await create_topics(bench_settings, [bench_settings.topic("ingest.events")])
        with tempfile.TemporaryDirectory() as folder:
            engine = get_engine(f"sqlite:///{folder}/bench.db")
            create_tables(engine)
            transactions = Transactions(engine, bench_settings.topic, projection=NOTHING)
            recorded_s = _recording_s(transactions, range(count), 1)
            batched_s = _recording_s(transactions, range(count, 2 * count), batch)
            broker = create_broker(bench_settings, client_id="bench")
            await broker.start()
            try:
                relay = OutboxRelay(engine, kafka_publisher(broker))
                started = time.perf_counter()
                while await relay.flush_once():
                    pass
                relayed_s = time.perf_counter() - started
            finally:
                await broker.stop()
            engine.dispose()
        return {
            "events": count,
            "record_events_per_s": round(count / recorded_s, 1),
            "record_batched_events_per_s": round(count / batched_s, 1),
            "record_batch": batch,
            "record_required_events_per_s": 5000,
            "relay_events_per_s": round(2 * count / relayed_s, 1),
        }

    return asyncio.run(run())


def _api(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def _pushed_at(receiver: LocalReceiver, task_id: str, deadline: float) -> float:
    """When the task's ``task.jobs-ready`` webhook arrived (monotonic), waiting for it."""
    while time.monotonic() < deadline:
        if delivered := receiver.of_task(task_id):
            return float(delivered[0]["arrived"])
        time.sleep(0.002)
    raise TimeoutError(f"no jobs-ready webhook for {task_id}")


@contextmanager
def _subscribed_receiver(client: LabelloopClient) -> Iterator[LocalReceiver]:
    """A local receiver subscribed to every task's ``task.jobs-ready``, unsubscribed after
    (a subscription left behind would send each later run's events to a closed port)."""
    from labelloop_tools.demo import LocalReceiver

    receiver = LocalReceiver()
    url = receiver.start()
    created = client.request(
        "POST", "/api/webhooks", json={"url": url, "events": ["io.labelloop.task.jobs-ready.v1"]}
    )
    receiver.secret = created["secret"]
    try:
        yield receiver
    finally:
        client.request("DELETE", f"/api/webhooks/{created['id']}")


def _new_task(client: LabelloopClient, name: str) -> str:
    body = {"name": name, "labels": ["box"], "segment_size": 10}
    return str(client.request("POST", "/api/tasks", json=body)["id"])


def bench_jobs_ready(settings: Settings, console: Console) -> dict[str, Any]:
    """Last upload → ``task.jobs-ready``: pushed by webhook vs. a client polling every 5 s."""
    import tempfile
    import threading

    from labelloop.client import LabelloopClient
    from labelloop_tools.probes import write_frames

    tasks, frames, poll_period_s = 20, 25, 5.0
    console.log(f"jobs_ready: {tasks} tasks of {frames} frames, polling every {poll_period_s:.0f}s")
    push_ms: list[float] = []
    poll_ms: list[float] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        LabelloopClient(_api(settings), settings.admin_token) as client,
        _subscribed_receiver(client) as receiver,
    ):
        files = write_frames(Path(folder), frames)
        for index in range(tasks):
            task_id = _new_task(client, f"bench-{index}")
            client.upload(task_id, files)  # the manifest goes last
            uploaded = time.monotonic()
            polled = threading.Event()

            def poll(
                task_id: str = task_id, start: float = uploaded, done: threading.Event = polled
            ) -> None:
                with LabelloopClient(_api(settings), settings.admin_token) as poller:
                    while True:  # CVAT's SDK: sleep status_check_period, then ask
                        time.sleep(poll_period_s)
                        if poller.request("GET", f"/api/tasks/{task_id}/jobs"):
                            poll_ms.append((time.monotonic() - start) * 1000)
                            done.set()
                            return

            threading.Thread(target=poll, daemon=True).start()
            push_ms.append((_pushed_at(receiver, task_id, uploaded + 120) - uploaded) * 1000)
            polled.wait(timeout=120)
    push_p50 = percentile(push_ms, 50)
    return {
        "tasks": tasks,
        "frames_per_task": frames,
        "poll_period_s": poll_period_s,
        "push_p50_ms": round(push_p50, 1),
        "push_p50_limit_ms": 300,
        "push_p95_ms": round(percentile(push_ms, 95), 1),
        "push_p95_limit_ms": 1000,
        "poll_p50_ms": round(percentile(poll_ms, 50), 1),
        "poll_p95_ms": round(percentile(poll_ms, 95), 1),
        "poll_p50_over_push_p50": round(percentile(poll_ms, 50) / push_p50, 1),
        "poll_p50_over_push_p50_required": 10,
    }


def bench_jobs_ready_large(settings: Settings, console: Console) -> dict[str, Any]:
    """One task of 2,000 frames: last frame's PUT → ``task.jobs-ready`` webhook, beside the
    upload itself and ingest's pace (a backlog at the end is ingest's, not the push's)."""
    import tempfile

    from labelloop.client import LabelloopClient
    from labelloop_tools.probes import write_frames

    frames = 2000
    console.log(f"jobs_ready_large: one task of {frames} frames")
    with (
        tempfile.TemporaryDirectory() as folder,
        LabelloopClient(_api(settings), settings.admin_token) as client,
        _subscribed_receiver(client) as receiver,
    ):
        files = write_frames(Path(folder), frames)
        task_id = _new_task(client, "bench-large")
        started = time.monotonic()
        client.upload(task_id, files)
        uploaded = time.monotonic()
        pushed = _pushed_at(receiver, task_id, uploaded + 600)
    return {
        "frames": frames,
        "upload_s": round(uploaded - started, 1),
        "last_put_to_jobs_ready_ms": round((pushed - uploaded) * 1000, 1),
        "first_put_to_jobs_ready_s": round(pushed - started, 1),
        "frames_per_s_end_to_end": round(frames / (pushed - started), 1),
    }


def bench_reconcile(settings: Settings, console: Console) -> dict[str, Any]:
    """A task whose notifications were all lost (the bucket sends none while it uploads):
    last PUT → ``task.jobs-ready``, recovered by ingest's reconciler alone."""
    import tempfile

    from labelloop.client import LabelloopClient
    from labelloop.stack.manager import Stack
    from labelloop_tools.probes import write_frames

    frames, tasks = 25, 3
    console.log(f"reconcile: {tasks} tasks of {frames} frames with notifications switched off")
    s3 = Stack(settings).s3
    recovered_ms: list[float] = []
    with (
        tempfile.TemporaryDirectory() as folder,
        LabelloopClient(_api(settings), settings.admin_token) as client,
        _subscribed_receiver(client) as receiver,
    ):
        files = write_frames(Path(folder), frames)
        s3.set_notifications(False)
        try:
            for index in range(tasks):
                task_id = _new_task(client, f"bench-reconcile-{index}")
                client.upload(task_id, files)
                uploaded = time.monotonic()
                pushed = _pushed_at(receiver, task_id, uploaded + 600)
                recovered_ms.append((pushed - uploaded) * 1000)
        finally:
            s3.set_notifications(True)
    return {
        "tasks": tasks,
        "frames_per_task": frames,
        "last_put_to_jobs_ready_ms": [round(ms, 1) for ms in recovered_ms],
        "median_ms": round(percentile(recovered_ms, 50), 1),
        "quiet_period_s": settings.ingest_reconcile_quiet_s,
        "tick_s": settings.ingest_reconcile_tick_s,
    }


BENCHMARKS: dict[str, Benchmark] = {
    "storage_to_kafka": bench_storage_to_kafka,
    "outbox": bench_outbox,
    "jobs_ready": bench_jobs_ready,
    "jobs_ready_large": bench_jobs_ready_large,
    "reconcile": bench_reconcile,
    "ingest": bench_ingest,
    "ingest_real": bench_ingest_real,
    "ingest_backlog": bench_ingest_backlog,
    # retrain first: the pre-annotation sections serve the model it publishes.
    "retrain": bench_retrain,
    "preannotate_640": bench_preannotate_640,
    "preannotate_batch": bench_preannotate_batch,
    "consumers": bench_consumers,
    "replay": bench_replay,
    "scale": bench_scale,
    "label_qa": bench_label_qa,
    "active_learning": bench_active_learning,
    "trainer_cluster": bench_trainer_cluster,
}


def run_benchmarks(
    settings: Settings, out: Path, console: Console, only: list[str] | None = None
) -> dict[str, Any]:
    """Run the benchmarks and merge their sections into ``out``."""
    document: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    document["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    document["generated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, benchmark in BENCHMARKS.items():
        if only and name not in only:
            continue
        document[name] = benchmark(settings, console)
        console.log(f"{name}: {document[name]}")
        out.write_text(json.dumps(document, indent=2) + "\n")  # a later failure loses nothing
    return document
