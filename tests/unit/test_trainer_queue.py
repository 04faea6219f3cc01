"""The training queue: priority with aging, coalescing, GPU matching, crash recovery.

These run the real handlers against a real (SQLite) database; no training happens here.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions
from schemas.events import LabelsThresholdReached, LabelsThresholdReachedData
from trainer.devices import Gpu, choose_device
from trainer.handlers import enqueue
from trainer.models import ModelVersion, TrainingRequest
from trainer.projections import PROJECTION
from trainer.queue import (
    Candidate,
    Enqueue,
    Preemption,
    Running,
    effective_priority,
    pick_next,
    preemption_victim,
)
from trainer.scheduler import Scheduler

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def candidate(task: str, priority: int, minutes_ago: float) -> Candidate:
    return Candidate(f"r-{task}", task, priority, NOW - timedelta(minutes=minutes_ago))


def test_effective_priority_formula() -> None:
    assert effective_priority(3, 0, 600) == 3
    assert effective_priority(3, 1200, 600) == 1
    assert effective_priority(2, -5, 600) == 2  # clock skew never makes a request worse


def test_p0_runs_first() -> None:
    queued = [candidate("a", 2, 1), candidate("b", 0, 0), candidate("c", 3, 2)]
    assert pick_next(queued, NOW, 600, set()) == queued[1]


def test_aging_lets_an_old_p3_pass_a_new_p2() -> None:
    old_p3, new_p2 = candidate("old", 3, 20), candidate("new", 2, 0)
    assert pick_next([new_p2, old_p3], NOW, 600, set()) == old_p3
    young_p3 = candidate("young", 3, 5)
    assert pick_next([new_p2, young_p3], NOW, 600, set()) == new_p2


def test_a_task_never_trains_twice_at_once() -> None:
    assert pick_next([candidate("a", 0, 1)], NOW, 600, {"a"}) is None


def test_gpu_matching() -> None:
    assert choose_device(None, 2048) == "cpu"
    assert choose_device([Gpu(0, 1000), Gpu(1, 5000), Gpu(2, 3000)], 2048) == "cuda:1"
    assert choose_device([Gpu(0, 1000)], 2048) is None, "wait for memory"


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/trainer.db")
    create_tables(engine)
    return engine


def threshold(task: str, crossing: int, priority: int, age_s: float = 0) -> LabelsThresholdReached:
    event = LabelsThresholdReached.create(
        LabelsThresholdReachedData(
            task_id=task, labeled_frames=crossing * 10, crossing=crossing, priority=priority
        ),
        source="/tests",
        key=(task, crossing),
        taskid=task,
    )
    return event.model_copy(update={"time": datetime.now(UTC) - timedelta(seconds=age_s)})


def requests(engine: Engine) -> list[TrainingRequest]:
    with Session(engine) as session:
        return list(session.exec(select(TrainingRequest)))


def backdate(engine: Engine, task: str, seconds: float) -> None:
    with Session(engine) as session:
        for request in session.exec(select(TrainingRequest).where(TrainingRequest.task_id == task)):
            request.enqueued_at = request.enqueued_at - timedelta(seconds=seconds)
            session.add(request)
        session.commit()


def test_scheduler_order_aging_and_coalescing(engine: Engine, tmp_path: Path) -> None:
    transactions = Transactions(engine, projection=PROJECTION)
    settings = Settings(trainer_aging_s=600, database_url=f"sqlite:///{tmp_path}/trainer.db")
    scheduler = Scheduler(transactions, settings)

    assert enqueue(threshold("p2-new", 1, 2), transactions) is Enqueue.NEW
    assert enqueue(threshold("p0", 1, 0), transactions) is Enqueue.NEW
    assert enqueue(threshold("p3-old", 1, 3), transactions) is Enqueue.NEW
    backdate(engine, "p3-old", 20 * 60)  # waited 20 min: effective priority 1

    order = []
    for _ in range(3):
        claimed = scheduler.claim_next()
        assert claimed is not None
        order.append(claimed.task_id)
    assert order == ["p0", "p3-old", "p2-new"]
    assert scheduler.claim_next() is None

    # five threshold events while "p0" trains: one follow-up run, not five
    decisions = [enqueue(threshold("p0", n, 0), transactions) for n in range(2, 7)]
    assert decisions == [Enqueue.FOLLOW_UP] + [Enqueue.MERGED] * 4
    follow_ups = [r for r in requests(engine) if r.task_id == "p0" and r.status == "queued"]
    assert len(follow_ups) == 1 and len(follow_ups[0].threshold_event_ids) == 5
    assert scheduler.claim_next() is None, "it waits for the running p0 run"
    assert enqueue(threshold("p0", 6, 0), transactions) is None, "a redelivered event is a no-op"

    with Session(engine) as session:
        started = [
            m
            for m in session.exec(select(OutboxMessage))
            if m.event_type == "io.labelloop.training.started.v1"
        ]
        versions = session.exec(select(ModelVersion)).all()
    assert len(started) == 3
    assert {(v.task_id, v.version, v.status) for v in versions} == {
        ("p0", 1, "training"),
        ("p3-old", 1, "training"),
        ("p2-new", 1, "training"),
    }


def test_crashed_runs_are_requeued_then_failed(engine: Engine, tmp_path: Path) -> None:
    transactions = Transactions(engine, projection=PROJECTION)
    settings = Settings(trainer_max_attempts=2, database_url=f"sqlite:///{tmp_path}/trainer.db")
    scheduler = Scheduler(transactions, settings)
    enqueue(threshold("t", 1, 1), transactions)
    first = scheduler.claim_next()
    assert first is not None and first.attempts == 1

    def mark_dead_owner() -> None:  # a trainer on another host, silent past its lease
        lapse(engine, first.id, owner="gone-host:1", seconds=settings.trainer_lease_s + 1)

    mark_dead_owner()
    scheduler.heartbeat()  # any trainer finds the orphan
    [requeued] = requests(engine)
    assert requeued.status == "queued" and requeued.version is None
    second = scheduler.claim_next()
    assert second is not None and second.attempts == 2 and second.version == 1
    mark_dead_owner()
    scheduler.heartbeat()
    [failed] = requests(engine)
    assert failed.status == "failed" and "died" in (failed.error or "")
    with Session(engine) as session:
        kinds = [m.event_type for m in session.exec(select(OutboxMessage))]
        version = session.get(ModelVersion, (1, "t"))
    assert kinds.count("io.labelloop.training.failed.v1") == 1
    assert version is not None and version.status == "failed"


def lapse(engine: Engine, request_id: str, *, owner: str, seconds: float) -> None:
    """The run's owner and its last lease renewal ``seconds`` ago."""
    with Session(engine) as session:
        request = session.get(TrainingRequest, request_id)
        assert request is not None
        request.owner = owner
        request.heartbeat_at = datetime.now(UTC) - timedelta(seconds=seconds)
        session.add(request)
        session.commit()


def trainers(engine: Engine, tmp_path: Path, count: int, **settings: object) -> list[Scheduler]:
    """``count`` trainers on one queue, each with one slot and a name of its own."""
    config = Settings(database_url=f"sqlite:///{tmp_path}/trainer.db", **settings)  # type: ignore[arg-type]
    transactions = Transactions(engine, projection=PROJECTION)
    return [Scheduler(transactions, config, owner=f"pod-{n}:1") for n in range(count)]


def test_many_trainers_claim_each_run_once_in_queue_order(engine: Engine, tmp_path: Path) -> None:
    a, b, c = trainers(engine, tmp_path, 3)
    for task, priority in (("p3", 3), ("p1", 1), ("p0", 0), ("p2", 2)):
        enqueue(threshold(task, 1, priority), a.transactions)
    claims = [(t.owner, t.claim_next()) for t in (a, b, c, a, b)]
    order = [(owner, r.task_id if r else None) for owner, r in claims]
    assert order == [
        ("pod-0:1", "p0"),
        ("pod-1:1", "p1"),
        ("pod-2:1", "p2"),
        ("pod-0:1", "p3"),
        ("pod-1:1", None),
    ], "the next run anywhere is the queue's next run, each claimed once"
    assert {(r.task_id, r.owner, r.attempts) for r in requests(engine)} == {
        ("p0", "pod-0:1", 1),
        ("p1", "pod-1:1", 1),
        ("p2", "pod-2:1", 1),
        ("p3", "pod-0:1", 1),
    }


def test_a_claim_is_a_conditional_update(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b reads the queue and chooses a run; a claims that run before b writes: b's claim finds
    it taken and claims nothing (a plain update would make it b's second attempt)."""
    a, b = trainers(engine, tmp_path, 2)
    enqueue(threshold("t", 1, 1), a.transactions)

    def a_claims_between(*args: object, **kwargs: object) -> Candidate | None:
        choice = pick_next(*args, **kwargs)  # type: ignore[arg-type]
        with Session(engine) as session:  # a's claim commits after b's read
            [request] = session.exec(select(TrainingRequest)).all()
            request.status, request.owner, request.attempts = "running", "pod-0:1", 1
            session.add(request)
            session.commit()
        return choice

    monkeypatch.setattr("trainer.scheduler.pick_next", a_claims_between)
    assert b.claim_next() is None
    [row] = requests(engine)
    assert (row.owner, row.attempts, row.status) == ("pod-0:1", 1, "running")


def test_an_orphan_waits_for_its_lease_unless_its_process_is_gone(
    engine: Engine, tmp_path: Path
) -> None:
    a, b = trainers(engine, tmp_path, 2, trainer_lease_s=30, trainer_heartbeat_s=5)
    enqueue(threshold("t", 1, 1), a.transactions)
    run = a.claim_next()
    assert run is not None
    a.attempts[run.id] = run.attempts
    assert a.heartbeat() == [], "its own run, renewed"
    lapse(engine, run.id, owner="pod-0:1", seconds=20)
    assert b.heartbeat() == [] and requests(engine)[0].status == "running", "within its lease"
    lapse(engine, run.id, owner="pod-0:1", seconds=31)
    b.heartbeat()
    [requeued] = requests(engine)
    assert requeued.status == "queued" and requeued.owner is None, "another trainer requeues it"

    again = b.claim_next()
    assert again is not None and again.owner == "pod-1:1" and again.attempts == 2
    dead_here = f"{socket.gethostname()}:{2**22 + 1}"  # no such process on this host
    lapse(engine, again.id, owner=dead_here, seconds=0)
    a.heartbeat()
    assert requests(engine)[0].status == "failed", "a process gone is known at once"


def test_a_trainer_stops_a_run_it_lost(engine: Engine, tmp_path: Path) -> None:
    """A trainer whose lease was taken over (it was cut off) stops its copy of the run."""
    a, b = trainers(engine, tmp_path, 2, trainer_max_attempts=3)
    enqueue(threshold("t", 1, 1), a.transactions)
    run = a.claim_next()
    assert run is not None
    a.running[run.id] = cast("asyncio.Task[None]", None)
    lapse(engine, run.id, owner="pod-0:1", seconds=a.settings.trainer_lease_s + 1)
    b.heartbeat()
    assert b.claim_next() is not None
    assert a.heartbeat() == [run.id], "b has it now: a stops its own attempt"


def test_aggressive_preemption_reaches_any_trainer(engine: Engine, tmp_path: Path) -> None:
    a, b = trainers(engine, tmp_path, 2, trainer_preemption="aggressive")
    enqueue(threshold("low", 1, 3), a.transactions)
    enqueue(threshold("mid", 1, 2), a.transactions)
    mid, low = a.claim_next(), b.claim_next()
    assert mid is not None and low is not None and low.task_id == "low" and low.owner == "pod-1:1"
    enqueue(threshold("urgent", 1, 0), a.transactions)
    assert a.choose_preemption() is None, "within the grace an idle trainer may claim it"
    backdate(engine, "urgent", a.settings.trainer_preempt_grace_s + 1)
    assert a.choose_preemption() == low.id, "a marks the least urgent run, which b runs"
    assert b.choose_preemption() is None, "one preemption at a time"
    b.processes[low.id] = cast("asyncio.subprocess.Process", object())
    assert a.asked_to_stop() == [] and b.asked_to_stop() == [low.id]
    [marked] = [r for r in requests(engine) if r.id == low.id]
    urgent = next(r for r in requests(engine) if r.task_id == "urgent")
    assert marked.preempted_by == urgent.id
    b.preempting.add(low.id)
    assert b.asked_to_stop() == [], "asked once"

    with Session(engine) as session:  # the run stepped aside, requeued with its mark
        row = session.get(TrainingRequest, low.id)
        assert row is not None
        row.status, row.owner = "queued", None
        session.add(row)
        session.commit()
    assert b.choose_preemption() is None, "its slot is the urgent run's: nobody else yields"
    taken = b.claim_next()
    assert taken is not None and taken.id == urgent.id and taken.preempted_by is None
    assert next(r for r in requests(engine) if r.id == low.id).preempted_by == urgent.id


def running(run: str, priority: int, minutes_ago: float) -> Running:
    return Running(run, priority, NOW - timedelta(minutes=minutes_ago))


def test_conservative_policy_never_preempts() -> None:
    victim = preemption_victim(
        Preemption.CONSERVATIVE,
        [running("low", 3, 5)],
        [candidate("urgent", 0, 0)],
        NOW,
        600,
        {"busy"},
    )
    assert victim is None


def test_aggressive_policy_preempts_the_least_urgent_run_for_a_higher_declared_priority() -> None:
    runs = [running("p1", 1, 10), running("p3-old", 3, 10), running("p3-new", 3, 1)]
    victim = preemption_victim(
        Preemption.AGGRESSIVE, runs, [candidate("urgent", 0, 0)], NOW, 600, set()
    )
    assert victim is not None and victim.request_id == "p3-new"  # it loses the least work


def test_aging_orders_the_queue_but_never_preempts() -> None:
    # A P3 that waited 40 minutes outranks a running P1 by effective priority (3 - 4 = -1),
    # yet its declared priority is lower: no preemption, so runs cannot take turns stopping.
    victim = preemption_victim(
        Preemption.AGGRESSIVE, [running("p1", 1, 1)], [candidate("old", 3, 40)], NOW, 600, set()
    )
    assert victim is None
    equal = preemption_victim(
        Preemption.AGGRESSIVE, [running("p1", 1, 1)], [candidate("same", 1, 0)], NOW, 600, set()
    )
    assert equal is None


def test_a_task_already_training_does_not_preempt_for_its_own_follow_up() -> None:
    victim = preemption_victim(
        Preemption.AGGRESSIVE,
        [running("p3", 3, 1)],
        [candidate("busy", 0, 0)],
        NOW,
        600,
        {"busy"},
    )
    assert victim is None
