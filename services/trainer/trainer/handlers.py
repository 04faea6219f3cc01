"""trainer's handlers: keep a copy of the labels, queue runs, and schedule them.

Runs execute in a child process (``python -m trainer.run``): a crash or a kill of the run
never takes the service down, and the scheduler sees it and retries or reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypedDict

import psutil
from sqlalchemy import func
from sqlmodel import Session, col, select

from labelloop.config import Settings
from labelloop.messaging.outbox import Transactions, UnitOfWork
from labelloop.metrics import EPOCHS_PER_SECOND, QUEUE_DEPTH, QUEUE_WAIT, RUN_DURATION
from schemas.events import (
    FrameProcessed,
    LabelsSubmitted,
    LabelsThresholdReached,
    TrainingFailed,
    TrainingFailedData,
    TrainingStarted,
    TrainingStartedData,
)
from trainer.devices import choose_device, visible_gpus
from trainer.models import ModelVersion, TrainingRequest
from trainer.queue import (
    Candidate,
    Enqueue,
    Preemption,
    Running,
    RunStatus,
    enqueue_decision,
    pick_next,
    preemption_victim,
)

log = logging.getLogger(__name__)
SOURCE = "/labelloop/trainer"
CONSUMER = "trainer"


def _now() -> datetime:
    return datetime.now(UTC)


def record_labels(events: Sequence[LabelsSubmitted], transactions: Transactions) -> None:
    """Keep the trainer's copy of the labels current (the last submission wins), a batch in
    one transaction."""
    if not events:
        return
    with transactions.unit_of_work(CONSUMER, [event.id for event in events]) as uow:
        fresh = {event.id: event for event in events if event.id not in uow.done}
        uow.apply_all(list(fresh.values()))


def record_frames(events: Sequence[FrameProcessed], transactions: Transactions) -> None:
    """Keep what ingest validated of each frame (its hash): a run trains only on that."""
    if not events:
        return
    with transactions.unit_of_work(CONSUMER, [event.id for event in events]) as uow:
        uow.apply_all([event for event in events if event.id not in uow.done])


def enqueue(event: LabelsThresholdReached, transactions: Transactions) -> Enqueue | None:
    """Queue a run for the task, or merge the event into the one already queued."""
    task_id = event.data.task_id
    with transactions.unit_of_work(CONSUMER, event.id) as uow:
        if uow.already_done:
            return None
        requests = uow.session.exec(
            select(TrainingRequest).where(
                TrainingRequest.task_id == task_id,
                col(TrainingRequest.status).in_([RunStatus.QUEUED, RunStatus.RUNNING]),
            )
        ).all()
        queued = next((r for r in requests if r.status == RunStatus.QUEUED), None)
        decision = enqueue_decision(
            queued is not None, any(r.status == RunStatus.RUNNING for r in requests)
        )
        if queued is not None:
            queued.threshold_event_ids = [*queued.threshold_event_ids, event.id]
            queued.priority = min(queued.priority, event.data.priority)
            uow.session.add(queued)
        else:
            uow.session.add(
                TrainingRequest(
                    id=uuid.uuid4().hex,
                    task_id=task_id,
                    priority=event.data.priority,
                    threshold_event_ids=[event.id],
                    first_threshold_at=event.time,
                )
            )
    log.info("task %s: threshold %d → %s", task_id, event.data.crossing, decision.value)
    return decision


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and psutil.pid_exists(int(pid))


class RunLinks(TypedDict):
    causationid: str | None
    correlationid: str


def run_links(request: TrainingRequest) -> RunLinks:
    """What links a run's events to their cause: the (last merged) threshold event that queued
    it, and the run id shared by every event of the run."""
    threshold = request.threshold_event_ids[-1] if request.threshold_event_ids else None
    return RunLinks(causationid=threshold, correlationid=request.id)


def progress_event(
    request: TrainingRequest, attempt: int, device: str, *, epoch: int, epochs: int
) -> TrainingStarted:
    """``training.started``: at epoch 0 when a run starts, then after each epoch it finishes."""
    assert request.version is not None
    return TrainingStarted.create(
        TrainingStartedData(
            task_id=request.task_id,
            run_id=request.id,
            version=request.version,
            device=device,
            epoch=epoch,
            epochs=epochs,
        ),
        source=SOURCE,
        key=(request.id, attempt, epoch),
        taskid=request.task_id,
        **run_links(request),
    )


def fail_run(uow: UnitOfWork, request: TrainingRequest, error: str) -> None:
    """Mark a run failed, its version too, and say why."""
    request.status, request.error, request.finished_at = RunStatus.FAILED, error[:2000], _now()
    uow.session.add(request)
    failed = TrainingFailed.create(
        TrainingFailedData(
            task_id=request.task_id,
            run_id=request.id,
            version=request.version or 1,
            error=error[:2000],
        ),
        source=SOURCE,
        key=(request.id, request.attempts),
        taskid=request.task_id,
        **run_links(request),
    )
    uow.record(failed)


class Scheduler:
    """Starts queued runs by effective priority when a slot (and a device) is free."""

    def __init__(self, transactions: Transactions, settings: Settings) -> None:
        self.transactions = transactions
        self.settings = settings
        self.running: dict[str, asyncio.Task[None]] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.preempting: set[str] = set()
        self.epochs: dict[str, int] = {}
        """Planned epochs of each running run (for the epochs/s gauge)."""
        self.poll_s = 0.5

    async def run(self) -> None:
        await asyncio.to_thread(self.recover)
        try:
            while True:
                while len(self.running) < self.settings.trainer_max_concurrent_runs:
                    request = await asyncio.to_thread(self.claim_next)
                    if request is None:
                        break
                    self.running[request.id] = asyncio.create_task(self._supervise(request))
                if len(self.running) >= self.settings.trainer_max_concurrent_runs:
                    await self._maybe_preempt()
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _maybe_preempt(self) -> None:
        """Aggressive policy: ask the least urgent run to checkpoint and step aside (SIGTERM;
        the run stops after its current epoch and requeues itself)."""
        if self.settings.trainer_preemption != Preemption.AGGRESSIVE:
            return
        victim = await asyncio.to_thread(self.choose_preemption)
        process = self.processes.get(victim) if victim else None
        if victim and process is not None and process.returncode is None:
            log.info("preempting run %s for a more urgent one", victim)
            self.preempting.add(victim)
            process.terminate()

    def choose_preemption(self) -> str | None:
        """The run of this scheduler to preempt now, recorded with the run it yields to."""
        with self.transactions.unit_of_work() as uow:
            rows = uow.session.exec(
                select(TrainingRequest).where(
                    col(TrainingRequest.status).in_([RunStatus.QUEUED, RunStatus.RUNNING])
                )
            ).all()
            mine = [
                r
                for r in rows
                if r.status == RunStatus.RUNNING
                and r.id in self.processes
                and r.id not in self.preempting
            ]
            queued = [
                Candidate(r.id, r.task_id, r.priority, _aware(r.enqueued_at))
                for r in rows
                if r.status == RunStatus.QUEUED
            ]
            busy = {r.task_id for r in rows if r.status == RunStatus.RUNNING}
            running = [Running(r.id, r.priority, _aware(r.started_at or _now())) for r in mine]
            victim = preemption_victim(
                Preemption.AGGRESSIVE, running, queued, _now(), self.settings.trainer_aging_s, busy
            )
            if victim is None:
                return None
            challenger = pick_next(queued, _now(), self.settings.trainer_aging_s, busy)
            row = next(r for r in mine if r.id == victim.request_id)
            row.preempted_by = challenger.request_id if challenger else None
            uow.session.add(row)
            return victim.request_id

    def recover(self) -> None:
        """Runs left ``running`` by a dead trainer go back to the queue, or fail for good."""
        with self.transactions.unit_of_work() as uow:
            orphans = uow.session.exec(
                select(TrainingRequest).where(TrainingRequest.status == RunStatus.RUNNING)
            ).all()
            for request in orphans:
                if _owner_alive(request.owner) and request.owner != owner_tag():
                    continue
                if _crashes(request) >= self.settings.trainer_max_attempts:
                    fail_run(uow, request, f"the trainer died during attempt {request.attempts}")
                    continue
                log.warning(
                    "requeueing run %s of task %s after a trainer crash",
                    request.id,
                    request.task_id,
                )
                request.status, request.owner = RunStatus.QUEUED, None
                uow.session.add(request)
                if request.version is not None:
                    stale = uow.session.get(ModelVersion, (request.version, request.task_id))
                    if stale is not None:
                        uow.session.delete(stale)
                request.version = None

    def claim_next(self) -> TrainingRequest | None:
        """Pick the next run, mark it running and announce it (one transaction)."""
        device = choose_device(visible_gpus(), self.settings.trainer_gpu_min_free_mib)
        if device is None:
            return None  # every GPU is too full: wait for memory rather than fail
        with self.transactions.unit_of_work() as uow:
            session = uow.session
            rows = session.exec(
                select(TrainingRequest).where(
                    col(TrainingRequest.status).in_([RunStatus.QUEUED, RunStatus.RUNNING])
                )
            ).all()
            busy = {r.task_id for r in rows if r.status == RunStatus.RUNNING}
            queued = [
                Candidate(r.id, r.task_id, r.priority, _aware(r.enqueued_at))
                for r in rows
                if r.status == RunStatus.QUEUED
            ]
            for priority in range(4):
                QUEUE_DEPTH.labels(str(priority)).set(
                    sum(1 for c in queued if c.priority == priority)
                )
            choice = pick_next(queued, _now(), self.settings.trainer_aging_s, busy)
            if choice is None:
                return None
            request = session.get(TrainingRequest, choice.request_id)
            assert request is not None
            version = _next_version(session, request.task_id)
            warm = _has_current_model(session, request.task_id)
            request.status, request.owner, request.started_at = (
                RunStatus.RUNNING,
                owner_tag(),
                _now(),
            )
            request.attempts += 1
            request.version, request.device = version, device
            session.add(request)
            started = progress_event(
                request,
                request.attempts,
                device,
                epoch=0,
                epochs=planned_epochs(self.settings, warm_start=warm),
            )
            uow.record(started)
        latency = (_now() - _aware(request.first_threshold_at)).total_seconds()
        QUEUE_WAIT.observe(latency)
        log.info(
            "run %s (task %s, v%d) started on %s, %.2fs after its threshold event",
            request.id,
            request.task_id,
            version,
            device,
            latency,
        )
        self.epochs[request.id] = planned_epochs(self.settings, warm_start=warm)
        return request

    async def _supervise(self, request: TrainingRequest) -> None:
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "trainer.run",
                request.id,
                env={**os.environ, **self.settings.as_env()},
            )
            self.processes[request.id] = process
            code = await process.wait()
            if code != 0:
                await asyncio.to_thread(self._after_crash, request.id, code)
            elif request.id in self.epochs:
                EPOCHS_PER_SECOND.set(self.epochs[request.id] / (time.monotonic() - started))
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError, UnboundLocalError):
                process.kill()
            raise
        finally:
            RUN_DURATION.observe(time.monotonic() - started)
            self.running.pop(request.id, None)
            self.epochs.pop(request.id, None)
            self.processes.pop(request.id, None)
            self.preempting.discard(request.id)

    def _after_crash(self, request_id: str, code: int) -> None:
        with self.transactions.unit_of_work() as uow:
            request = uow.session.get(TrainingRequest, request_id)
            if request is None or request.status != RunStatus.RUNNING:
                return
            if _crashes(request) < self.settings.trainer_max_attempts:
                log.warning("run %s exited with %d; requeued", request_id, code)
                request.status, request.owner = RunStatus.QUEUED, None
                stale = uow.session.get(ModelVersion, (request.version, request.task_id))
                if stale is not None:
                    uow.session.delete(stale)
                request.version = None
                uow.session.add(request)
            else:
                fail_run(uow, request, f"the training process exited with status {code}")


def _crashes(request: TrainingRequest) -> int:
    """Attempts that ended by a crash or a kill: a preempted attempt is not a failure."""
    return request.attempts - request.preemptions


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def planned_epochs(settings: Settings, *, warm_start: bool) -> int:
    """A first model trains from scratch; later ones fine-tune the current one, for fewer."""
    return settings.trainer_warm_epochs if warm_start else settings.trainer_epochs


def _has_current_model(session: Session, task_id: str) -> bool:
    current = session.exec(
        select(ModelVersion.version).where(
            ModelVersion.task_id == task_id, col(ModelVersion.current).is_(True)
        )
    ).first()
    return current is not None


def _next_version(session: Session, task_id: str) -> int:
    latest = session.exec(
        select(func.max(ModelVersion.version)).where(ModelVersion.task_id == task_id)
    ).one()
    return (latest or 0) + 1
