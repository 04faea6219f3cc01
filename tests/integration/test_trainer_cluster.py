"""Many trainers, one queue: trainer processes (pods, locally) sharing one PostgreSQL queue on the
real stack. Runs spread over them, each claimed once, in the queue's order (priorities and
aging across every trainer); a P0 preempts a P3 that another trainer runs; a trainer killed
mid-run has its run resumed by another from its last checkpoint."""

from __future__ import annotations

import signal
import socket
import subprocess
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.stack.base import free_port
from labelloop.storage import ObjectStore
from labelloop_tools.training_queue import queue_run, seed_training_task
from tests.integration.harness import service_process
from tests.integration.test_trainer_faults import (
    ENDINGS,
    PREEMPTED,
    STARTED,
    request_row,
    status_of,
    trainer_engine,
    trainer_env,
    trainer_events,
    wait_for,
)
from trainer.models import TrainingRequest
from trainer.queue import QUEUE_DEPTH_QUERY

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.trainer_cluster]
__all__ = ["trainer_engine", "trainer_env"]  # the fixtures, shared with the single trainer's


@pytest.fixture
def cluster_engine(trainer_engine: Engine) -> Engine:
    if trainer_engine.dialect.name != "postgresql":
        raise RuntimeError(
            "many trainers share their queue through PostgreSQL: run with "
            "LABELLOOP_TEST_DATABASE=postgresql (make test does, in its PostgreSQL lane)"
        )
    return trainer_engine


def trainers(
    stack: ExitStack, count: int, env: dict[str, str], log: Path
) -> dict[int, subprocess.Popen[bytes]]:
    """``count`` trainer processes on one queue, by pid."""
    started = {}
    for _ in range(count):
        process = stack.enter_context(
            service_process(["trainer"], env | {"LABELLOOP_API_PORT": str(free_port())}, log)
        )
        started[process.pid] = process
    return started


def rows(engine: Engine, task_ids: list[str]) -> dict[str, TrainingRequest]:
    with Session(engine) as session:
        found = session.exec(select(TrainingRequest)).all()
    return {row.task_id: row for row in found if row.task_id in task_ids}


def queue_depth(engine: Engine) -> int:
    """The chart's KEDA query, run as KEDA runs it (this test's database holds its runs only)."""
    with engine.connect() as connection:
        return int(connection.execute(text(QUEUE_DEPTH_QUERY)).scalar_one())


def all_done(engine: Engine, task_ids: list[str]) -> bool:
    return all(status_of(engine, task) == "done" for task in task_ids)


async def events_of(settings: Settings, task_id: str) -> list[dict[str, Any]]:
    return sorted(await trainer_events(settings, task_id), key=lambda e: str(e["time"]))


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


async def test_three_trainers_share_one_queue(
    cluster_engine: Engine,
    test_settings: Settings,
    store: ObjectStore,
    trainer_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    engine = cluster_engine
    # the queue's order: P0, then a P3 aged 25 min (effective 0.5), P1, P2, then the P2 and the
    # P3 that came last (the same declared priority: the earlier first)
    plan = [("urgent", 0, 0), ("aged", 3, 25 * 60), ("p1", 1, 0), ("p2", 2, 0)]
    plan += [("p2-late", 2, 0), ("p3", 3, 0)]
    tasks = [f"{name}{unique}" for name, _, _ in plan]
    for task_id, (_, priority, waited_s) in zip(tasks, plan, strict=True):
        seed_training_task(engine, store, task_id, priority=priority)
        queue_run(engine, task_id, priority, waited_s)
    assert queue_depth(engine) == len(tasks), "what KEDA would size the trainers on"
    env = trainer_env | {"LABELLOOP_TRAINER_EPOCHS": "2", "LABELLOOP_MODEL_IMGSZ": "64"}
    log = tmp_path / "trainers.log"
    with ExitStack() as stack:
        processes = trainers(stack, 3, env, log)
        wait_for(lambda: all_done(engine, tasks), 900, f"every run finishes\n{log_tail(log)}")
        assert all(p.poll() is None for p in processes.values()), "every trainer outlived its runs"
    assert queue_depth(engine) == 0, "drained: KEDA takes the trainers to zero"

    done = rows(engine, tasks)
    started = sorted(tasks, key=lambda t: done[t].started_at or datetime.max)
    assert started == tasks, "claimed in the queue's order, across every trainer"
    assert all(done[t].attempts == 1 for t in tasks), "each run claimed once"
    owners = {done[t].owner for t in tasks}
    assert len(owners) >= 2 and owners <= {f"{socket.gethostname()}:{pid}" for pid in processes}
    for task_id in tasks:  # each run trained once: one start at epoch 0, one outcome
        events = await events_of(test_settings, task_id)
        starts = [e for e in events if e["type"] == STARTED and e["data"]["epoch"] == 0]
        assert len(starts) == 1 and len([e for e in events if e["type"] in ENDINGS]) == 1


async def test_a_p0_preempts_a_p3_that_another_trainer_runs(
    cluster_engine: Engine,
    test_settings: Settings,
    store: ObjectStore,
    trainer_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    engine = cluster_engine
    low, mid, urgent = f"low{unique}", f"mid{unique}", f"urgent{unique}"
    for task_id, priority in ((low, 3), (mid, 2), (urgent, 0)):
        seed_training_task(engine, store, task_id, priority=priority)
    queue_run(engine, low, 3)
    queue_run(engine, mid, 2)
    env = trainer_env | {
        "LABELLOOP_TRAINER_PREEMPTION": "aggressive",
        "LABELLOOP_TRAINER_EPOCHS": "30",
        "LABELLOOP_TRAINER_CHECKPOINT_INTERVAL_S": "3600",
    }
    log = tmp_path / "trainers.log"
    with ExitStack() as stack:
        trainers(stack, 2, env, log)
        wait_for(
            lambda: {status_of(engine, low), status_of(engine, mid)} == {"running"},
            180,
            f"both trainers busy\n{log_tail(log)}",
        )
        busy = rows(engine, [low, mid])
        assert busy[low].owner != busy[mid].owner, "one run on each trainer"
        queue_run(engine, urgent, 0)
        wait_for(
            lambda: status_of(engine, urgent) == "running",
            120,
            f"the P0 starts\n{log_tail(log)}",
        )
        running = rows(engine, [low, mid, urgent])
        assert running[urgent].owner == busy[low].owner, "on the slot the P3 gave up"
        assert running[mid].status == "running" and running[mid].preemptions == 0
        wait_for(lambda: all_done(engine, [low, mid, urgent]), 900, f"all done\n{log_tail(log)}")

    final = rows(engine, [low, mid, urgent])
    assert final[low].preemptions == 1 and final[low].attempts == 2
    assert final[urgent].attempts == 1 and final[mid].attempts == 1
    urgent_done, low_done = final[urgent].finished_at, final[low].finished_at
    assert urgent_done is not None and low_done is not None and urgent_done < low_done
    events = await events_of(test_settings, low)
    [preempted] = [e for e in events if e["type"] == PREEMPTED]
    assert preempted["data"]["preempted_by"] == final[urgent].id
    resumed = [
        e["data"]["epoch"]
        for e in events
        if e["type"] == STARTED and e["time"] > preempted["time"] and e["data"]["epoch"] > 0
    ]
    assert resumed and min(resumed) == preempted["data"]["epochs_done"] + 1


async def test_a_killed_trainers_run_resumes_on_another_from_its_checkpoint(
    cluster_engine: Engine,
    test_settings: Settings,
    store: ObjectStore,
    trainer_env: dict[str, str],
    tmp_path: Path,
    unique: str,
) -> None:
    engine = cluster_engine
    task_id = f"kill{unique}"
    seed_training_task(engine, store, task_id, priority=1)
    queue_run(engine, task_id, 1)
    env = trainer_env | {
        "LABELLOOP_TRAINER_EPOCHS": "30",
        "LABELLOOP_TRAINER_CHECKPOINT_INTERVAL_S": "0",
    }
    log = tmp_path / "trainers.log"
    with ExitStack() as stack:
        processes = trainers(stack, 2, env, log)
        wait_for(
            lambda: request_row(engine, task_id).epochs_done >= 3,
            300,
            f"three epochs kept\n{log_tail(log)}",
        )
        first = request_row(engine, task_id)
        owner_pid = int((first.owner or ":").rpartition(":")[2])
        processes[owner_pid].send_signal(signal.SIGKILL)
        processes[owner_pid].wait(timeout=10)
        wait_for(lambda: status_of(engine, task_id) == "done", 600, f"resumed\n{log_tail(log)}")
        [survivor] = [pid for pid in processes if pid != owner_pid]
        assert processes[survivor].poll() is None

    finished = request_row(engine, task_id)
    assert finished.attempts == 2 and finished.owner == f"{socket.gethostname()}:{survivor}"
    events = await events_of(test_settings, task_id)
    epochs = [e["data"]["epoch"] for e in events if e["type"] == STARTED]
    restart = epochs.index(0, 1)  # the second attempt's start
    resumed_from = epochs[restart + 1] - 1
    assert resumed_from >= 3, "the second attempt went on from a kept checkpoint"
    assert epochs[restart + 1 :] == list(range(resumed_from + 1, 31))
    assert len([e for e in events if e["type"] in ENDINGS]) == 1
