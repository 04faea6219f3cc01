"""The trainer's scheduler: claims queued runs by effective priority, supervises them, and
preempts or requeues them.

Runs execute in a child process (``python -m trainer.run``): a crash or a kill of the run
never takes the service down, and the scheduler sees it and retries or reports it. The queue's
rules (priority with aging, coalescing, preemption) are pure functions in :mod:`trainer.queue`;
what a run announces is built in :mod:`trainer.run_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime

import psutil
from sqlalchemy import func
from sqlmodel import Session, col, select

from labelloop.config import Settings
from labelloop.messaging.outbox import Transactions
from labelloop.metrics import EPOCHS_PER_SECOND, QUEUE_DEPTH, QUEUE_WAIT, RUN_DURATION
from schemas.envelope import utcnow
from trainer.devices import choose_device, visible_gpus
from trainer.models import ModelVersion, TrainingRequest
from trainer.queue import Candidate, Preemption, Running, RunStatus, pick_next, preemption_victim
from trainer.run_events import fail_run, planned_epochs, progress_event

log = logging.getLogger(__name__)


def owner_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and psutil.pid_exists(int(pid))


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
        if self.settings.trainer_preemption != Preemption.AGGRESSIVE.value:
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
            running = [Running(r.id, r.priority, _aware(r.started_at or utcnow())) for r in mine]
            victim = preemption_victim(
                Preemption.AGGRESSIVE,
                running,
                queued,
                utcnow(),
                self.settings.trainer_aging_s,
                busy,
            )
            if victim is None:
                return None
            challenger = pick_next(queued, utcnow(), self.settings.trainer_aging_s, busy)
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
            choice = pick_next(queued, utcnow(), self.settings.trainer_aging_s, busy)
            if choice is None:
                return None
            request = session.get(TrainingRequest, choice.request_id)
            assert request is not None
            version = _next_version(session, request.task_id)
            warm = _has_current_model(session, request.task_id)
            request.status, request.owner, request.started_at = (
                RunStatus.RUNNING,
                owner_tag(),
                utcnow(),
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
        latency = (utcnow() - _aware(request.first_threshold_at)).total_seconds()
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
