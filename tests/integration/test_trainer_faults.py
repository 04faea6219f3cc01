"""The trainer under faults, as its own OS process on the real stack: killed mid-run (the
service, then the run's own process), and a low-priority run preempted by an urgent one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import free_port
from labelloop.stack.manager import Stack
from labelloop.storage import ObjectStore
from labelloop_tools.training_queue import seed_training_task, send_threshold
from schemas.topics import Topic
from tests.integration.harness import service_process, wait_until
from tests.integration.kafka_helpers import read_topic
from trainer.models import ModelVersion, TrainingRequest

pytestmark = [pytest.mark.integration, pytest.mark.training]

EPOCHS = 30  # room for the urgent event to arrive (a consumer rebalance can take seconds)
STARTED = "io.labelloop.training.started.v1"
PREEMPTED = "io.labelloop.training.preempted.v1"
ENDINGS = {"io.labelloop.model.published.v1", "io.labelloop.model.rejected.v1"}
FAILED = "io.labelloop.training.failed.v1"


def run_processes(service: psutil.Process) -> list[psutil.Process]:
    """The service's ``python -m trainer.run`` children."""
    try:
        children = service.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "trainer.run" in " ".join(_cmdline(child))]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def request_row(engine: Engine, task_id: str) -> TrainingRequest:
    with Session(engine) as session:
        [row] = session.exec(select(TrainingRequest).where(TrainingRequest.task_id == task_id))
        return row


def status_of(engine: Engine, task_id: str) -> str | None:
    """The task's run status; None before its threshold event is consumed."""
    with Session(engine) as session:
        rows = session.exec(select(TrainingRequest).where(TrainingRequest.task_id == task_id)).all()
    return rows[0].status if rows else None


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    assert wait_until(predicate, timeout_s=timeout_s, interval_s=0.2), f"timed out: {what}"


async def trainer_events(settings: Settings, task_id: str) -> list[dict[str, Any]]:
    records = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic(Topic.TRAINER_EVENTS),
        timeout_s=2,
        settle_s=0.2,
    )
    events = [json.loads(record.value) for record in records]
    return [e for e in events if e["data"]["task_id"] == task_id]


@pytest.fixture
def trainer_env(
    test_settings: Settings, tmp_path: Path, database_url: str
) -> Iterator[dict[str, str]]:
    yield {
        "LABELLOOP_KAFKA_TOPIC_PREFIX": test_settings.kafka_topic_prefix,
        "LABELLOOP_DATABASE_URL": database_url,
        "LABELLOOP_VAR_DIR": str(tmp_path / "var"),
        "LABELLOOP_TRAINER_MIN_RECALL": "0",
        "LABELLOOP_TRAINER_MIN_PRECISION": "0",
    }


@pytest.fixture
async def trainer_engine(
    stack: Stack, test_settings: Settings, trainer_env: dict[str, str]
) -> Engine:
    """The trainer's database, with its tables, and the test's topics."""
    engine = get_engine(trainer_env["LABELLOOP_DATABASE_URL"])
    create_tables(engine)
    await create_topics(test_settings, topic_names(test_settings))
    return engine


async def test_a_killed_trainer_is_retried_then_reported_failed(
    trainer_engine: Engine,
    test_settings: Settings,
    store: ObjectStore,
    trainer_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    engine = trainer_engine
    task_id = f"kill{unique}"
    seed_training_task(engine, store, task_id, priority=1)
    await send_threshold(test_settings, task_id, priority=1)
    env = trainer_env | {"LABELLOOP_TRAINER_EPOCHS": "200", "LABELLOOP_TRAINER_MAX_ATTEMPTS": "2"}
    log = tmp_path / "trainer.log"

    # 1. kill -9 the trainer service mid-run: its run dies with it; the run stays "running".
    with service_process(["trainer"], env | {"LABELLOOP_API_PORT": str(free_port())}, log) as first:
        service = psutil.Process(first.pid)
        wait_for(lambda: run_processes(service), 120, f"a run process\n{log.read_text()[-2000:]}")
        [child] = run_processes(service)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    wait_for(lambda: not child.is_running() or child.status() == "zombie", 10, "run dies too")
    orphan = request_row(engine, task_id)
    assert orphan.status == "running" and orphan.attempts == 1

    # 2. a new trainer requeues it and retries; kill the retry's own process this time.
    with service_process(
        ["trainer"], env | {"LABELLOOP_API_PORT": str(free_port())}, log
    ) as second:
        service = psutil.Process(second.pid)
        wait_for(lambda: run_processes(service), 120, "the retry's run process")
        assert request_row(engine, task_id).attempts == 2
        [child] = run_processes(service)
        os.kill(child.pid, signal.SIGKILL)
        wait_for(lambda: status_of(engine, task_id) == "failed", 30, "reported failed")

        failed = request_row(engine, task_id)
        assert failed.attempts == 2 and failed.error and "status -9" in failed.error
        with Session(engine) as session:
            versions = session.exec(
                select(ModelVersion).where(ModelVersion.task_id == task_id)
            ).all()
        assert [(v.version, v.status) for v in versions] == [(1, "failed")]
        # the service outlived its run, and says why the run failed
        assert second.poll() is None
        events: list[dict[str, Any]] = []

        async def failure_announced() -> bool:
            events[:] = await trainer_events(test_settings, task_id)
            return any(e["type"] == FAILED for e in events)

        deadline = time.monotonic() + 30
        while not await failure_announced() and time.monotonic() < deadline:
            time.sleep(0.5)
    [failure] = [e for e in events if e["type"] == FAILED]
    assert "exited with status -9" in failure["data"]["error"]
    assert {e["data"]["epoch"] for e in events if e["type"] == STARTED} >= {0}
    assert not [e for e in events if e["type"] in ENDINGS], "a killed run publishes nothing"


async def test_aggressive_preemption_checkpoints_and_resumes(
    trainer_engine: Engine,
    test_settings: Settings,
    store: ObjectStore,
    trainer_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    engine = trainer_engine
    low, urgent = f"low{unique}", f"urgent{unique}"
    seed_training_task(engine, store, low, priority=3)
    seed_training_task(engine, store, urgent, priority=0)
    env = trainer_env | {
        "LABELLOOP_TRAINER_PREEMPTION": "aggressive",
        "LABELLOOP_TRAINER_EPOCHS": str(EPOCHS),
        # no later checkpoint replaces (and deletes) the preemption's, which is checked below
        "LABELLOOP_TRAINER_CHECKPOINT_INTERVAL_S": "3600",
        "LABELLOOP_API_PORT": str(free_port()),
    }
    log = tmp_path / "trainer.log"
    with service_process(["trainer"], env, log) as service:
        await send_threshold(test_settings, low, priority=3)
        wait_for(
            lambda: status_of(engine, low) == "running",
            120,
            f"the P3 run starts\n{log.read_text()[-2000:]}",
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # into its first epochs
            started = await trainer_events(test_settings, low)
            if any(e["type"] == STARTED and e["data"]["epoch"] >= 1 for e in started):
                break
        await send_threshold(test_settings, urgent, priority=0)

        def both_done() -> bool:
            return all(status_of(engine, t) == "done" for t in (low, urgent))

        wait_for(both_done, 600, f"both runs finish\n{log.read_text()[-3000:]}")
        assert service.poll() is None

    low_row, urgent_row = request_row(engine, low), request_row(engine, urgent)
    assert low_row.preemptions == 1 and low_row.attempts == 2
    assert urgent_row.preemptions == 0 and urgent_row.attempts == 1
    assert low_row.finished_at is not None and urgent_row.finished_at is not None
    assert urgent_row.finished_at < low_row.finished_at, "the urgent run went first"

    # the run's last event is committed with its status and reaches Kafka through the relay
    deadline = time.monotonic() + 60
    events = await trainer_events(test_settings, low)
    while not any(e["type"] in ENDINGS for e in events) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        events = await trainer_events(test_settings, low)
    [preempted] = [e for e in events if e["type"] == PREEMPTED]
    data = preempted["data"]
    assert data["preempted_by"] == urgent_row.id and data["epochs"] == EPOCHS
    assert 1 <= data["epochs_done"] < EPOCHS
    checkpoint = store.get_bytes(data["checkpoint_key"])  # the checkpoint is kept in the store
    assert data["checkpoint_sha256"] == hashlib.sha256(checkpoint).hexdigest()  # resumed if equal
    # the resumed attempt continues the epoch count instead of starting again
    resumed = [
        e["data"]["epoch"]
        for e in events
        if e["type"] == STARTED and e["time"] > preempted["time"] and e["data"]["epoch"] > 0
    ]
    assert resumed and min(resumed) == data["epochs_done"] + 1 and max(resumed) == EPOCHS
    assert len([e for e in events if e["type"] in ENDINGS]) == 1
    with Session(engine) as session:
        versions = session.exec(select(ModelVersion).where(ModelVersion.task_id == low)).all()
    assert [v.version for v in versions] == [1], "the preempted attempt left no version behind"
