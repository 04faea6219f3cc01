"""``make bench``: measured figures, written as one JSON document (``var/bench.json``)."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from labelloop.config import Settings

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
    from labelloop.probes import storage_round_trips

    count = 50
    console.log(f"storage_to_kafka: {count} puts")
    latencies = [lat * 1000 for _, lat in asyncio.run(storage_round_trips(settings, count))]
    return {
        "samples": count,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p95_ms": round(percentile(latencies, 95), 2),
    }


def bench_outbox(settings: Settings, console: Console) -> dict[str, Any]:
    """Events recorded in the outbox and relayed to Kafka by the relay, per second."""
    import tempfile

    from labelloop.db import create_tables, get_engine
    from labelloop.messaging.broker import create_broker, kafka_publisher
    from labelloop.messaging.outbox import OutboxRelay, Transactions
    from labelloop.messaging.topics import create_topics
    from schemas.events import TaskDataReady, TaskDataReadyData

    count = 2000
    console.log(f"outbox: {count} events")
    bench_settings = settings.model_copy(update={"kafka_topic_prefix": f"bench{time.time_ns()}."})
    topic = bench_settings.topic("ingest.events")

    async def run() -> dict[str, Any]:
        await create_topics(bench_settings, [topic])
        with tempfile.TemporaryDirectory() as folder:
            engine = get_engine(f"sqlite:///{folder}/bench.db")
            create_tables(engine)
            transactions = Transactions(engine)
            started = time.perf_counter()
            for index in range(count):
                with transactions.unit_of_work("bench", str(index)) as uow:
                    uow.emit(
                        TaskDataReady.create(
                            TaskDataReadyData(task_id=f"t{index % 50}", frames=[]),
                            source="/bench",
                            key=(index,),
                            taskid=f"t{index % 50}",
                        ),
                        topic,
                    )
            recorded_s = time.perf_counter() - started
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
            "relay_events_per_s": round(count / relayed_s, 1),
        }

    return asyncio.run(run())


BENCHMARKS: dict[str, Benchmark] = {
    "storage_to_kafka": bench_storage_to_kafka,
    "outbox": bench_outbox,
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
    for name, benchmark in BENCHMARKS.items():
        if only and name not in only:
            continue
        document[name] = benchmark(settings, console)
        console.log(f"{name}: {document[name]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    return document
