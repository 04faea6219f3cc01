"""``make bench``'s ``trainer_cluster`` section: trainer processes (pods, locally) sharing one
queue on a throwaway PostgreSQL server, with small runs on this machine's CPU.

- How soon a P0 starts after its threshold event (sent through Kafka, as labeler-assist sends
  it): with an idle trainer, and with every trainer busy on P3 runs under aggressive preemption
  (the seed's anchor: ~2 h of queueing cut to 3 minutes on a crowded GPU cluster).
- How long a burst of 12 queued runs takes to drain with 1, 2 and 3 trainers (the scaling curve;
  on 2 cores the trainers share the same CPUs, so the curve says what the queue adds or costs,
  not what more GPUs would give).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import free_port
from labelloop.storage import ObjectStore
from labelloop_tools.bench_scale import start_service
from labelloop_tools.postgres import PostgresServer
from labelloop_tools.training_queue import queue_run, seed_training_task, send_threshold
from trainer.models import TrainingRequest

BURST = 12
TRAINERS = (1, 2, 3)
SMALL_RUN: dict[str, Any] = {"trainer_epochs": 2, "model_imgsz": 64}
"""A run of a few seconds: what the drain measures is the queue, not the training."""
LONG_RUN: dict[str, Any] = {"trainer_epochs": 200}
"""Runs that outlast the measurement: the P3s every trainer is busy with."""
ANCHOR_S = 3 * 60
"""The seed's figure for a P0 fix on a crowded GPU cluster, after its fix: 3 minutes."""


def bench_trainer_cluster(settings: Settings, console: Console) -> dict[str, Any]:
    folder = settings.var_dir.resolve() / "bench-trainers"
    shutil.rmtree(folder, ignore_errors=True)
    server = PostgresServer(folder / "pg", port=free_port())
    server.start()
    try:
        return _measure(settings, server, folder, console)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _measure(
    settings: Settings, server: PostgresServer, folder: Path, console: Console
) -> dict[str, Any]:
    figures: dict[str, Any] = {"anchor_p0_start_s": ANCHOR_S}
    with _cluster(settings, server, folder, "idle") as cluster:
        console.log("trainer_cluster: a P0 with an idle trainer")
        cluster.start(1, {})
        figures["p0_start_idle_trainer_s"] = round(cluster.p0_start(), 2)
    with _cluster(settings, server, folder, "busy") as cluster:
        console.log("trainer_cluster: a P0 with both trainers busy on P3 runs (aggressive)")
        for n in range(2):
            cluster.seed(f"p3-{n}", 3)
            queue_run(cluster.engine, cluster.task(f"p3-{n}"), 3)
        cluster.start(2, LONG_RUN | {"trainer_preemption": "aggressive"})
        cluster.wait(lambda: cluster.statuses() == ["running", "running"], "both P3s running")
        figures["p0_start_all_busy_s"] = round(cluster.p0_start(), 2)
    for count in TRAINERS:
        with _cluster(settings, server, folder, f"drain{count}") as cluster:
            console.log(f"trainer_cluster: {BURST} queued runs, {count} trainer(s)")
            for n in range(BURST):
                cluster.seed(f"burst-{n}", n % 4)
            cluster.start(count, SMALL_RUN)
            started = time.monotonic()
            for n in range(BURST):
                queue_run(cluster.engine, cluster.task(f"burst-{n}"), n % 4)
            cluster.wait(lambda: cluster.statuses() == ["done"] * BURST, "the burst drained")
            figures[f"drain_{BURST}_runs_{count}_trainers_s"] = round(time.monotonic() - started, 1)
            figures[f"drain_{count}_trainers_owners"] = cluster.owners()
    one = figures[f"drain_{BURST}_runs_1_trainers_s"]
    for count in TRAINERS[1:]:
        speedup = one / figures[f"drain_{BURST}_runs_{count}_trainers_s"]
        figures[f"drain_speedup_{count}_over_1"] = round(speedup, 2)
    figures["note"] = (
        "trainers are processes on this 2-core machine, each training on the CPU: the drain "
        "curve measures the shared queue (claims, leases, preemption), not more hardware"
    )
    return figures


class _Cluster:
    """Trainer processes on one fresh database and topics of their own."""

    def __init__(self, settings: Settings, url: str, folder: Path, stack: ExitStack) -> None:
        self.prefix = f"bt{uuid.uuid4().hex[:8]}."
        self.settings = settings.model_copy(
            update={
                "database_url": url,
                "kafka_topic_prefix": self.prefix,
                "kafka_group_prefix": self.prefix,
            }
        )
        self.folder, self.stack = folder, stack
        self.engine = get_engine(url)
        create_tables(self.engine)
        asyncio.run(create_topics(self.settings, topic_names(self.settings)))
        self.store = ObjectStore.from_settings(self.settings)
        self.store.ensure_bucket()

    def task(self, name: str) -> str:
        return f"{self.prefix.rstrip('.')}-{name}"

    def seed(self, name: str, priority: int) -> None:
        seed_training_task(self.engine, self.store, self.task(name), priority)

    def start(self, count: int, settings: dict[str, Any]) -> None:
        """``count`` trainers with these ``settings``, each answering its health check."""
        scoped = self.settings.model_copy(
            update={
                "var_dir": self.folder / "var",
                "trainer_min_recall": 0.0,
                "trainer_min_precision": 0.0,
                **settings,
            }
        )
        for _ in range(count):
            start_service(scoped, "trainer", self.folder, self.stack)

    def p0_start(self) -> float:
        """Seconds from a P0's threshold event (through Kafka) to its run's start."""
        self.seed("p0", 0)
        asyncio.run(send_threshold(self.settings, self.task("p0"), 0))
        self.wait(lambda: getattr(self._p0(), "started_at", None) is not None, "the P0 starts")
        run = self._p0()
        assert run is not None and run.started_at is not None
        return (run.started_at - run.first_threshold_at).total_seconds()

    def _p0(self) -> TrainingRequest | None:
        with Session(self.engine) as session:
            return session.exec(
                select(TrainingRequest).where(TrainingRequest.task_id == self.task("p0"))
            ).first()

    def statuses(self) -> list[str]:
        with Session(self.engine) as session:
            return [r.status for r in session.exec(select(TrainingRequest))]

    def owners(self) -> int:
        with Session(self.engine) as session:
            return len({r.owner for r in session.exec(select(TrainingRequest))})

    def wait(self, done: Callable[[], bool], what: str, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                log = (self.folder / "trainer.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"trainer_cluster: timed out waiting: {what}\n{log}")
            time.sleep(0.1)


@contextmanager
def _cluster(
    settings: Settings, server: PostgresServer, folder: Path, name: str
) -> Iterator[_Cluster]:
    with ExitStack() as stack:
        (folder / name).mkdir(parents=True, exist_ok=True)
        cluster = _Cluster(settings, server.new_database(), folder / name, stack)
        stack.callback(cluster.engine.dispose)
        yield cluster
