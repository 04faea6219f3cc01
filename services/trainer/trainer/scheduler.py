"""The trainer's scheduler: claims queued runs by effective priority, supervises them, and
preempts or requeues them, as one of any number of trainers (pods) sharing the queue.

Runs execute in a child process (``python -m trainer.run``): a crash or a kill of the run
never takes the service down, and the scheduler sees it and retries or reports it. The queue's
rules (priority with aging, coalescing, preemption) are pure functions in :mod:`trainer.queue`;
what a run announces is built in :mod:`trainer.run_events`.

Many trainers, one queue: every decision over the queue (a claim, a preemption, requeueing an
orphan) is one transaction under one lock (a PostgreSQL advisory lock; SQLite has one writer),
and a claim is also a conditional update of a queued row, so a run is claimed by exactly one
trainer, and the next run anywhere is the queue's next run. A trainer renews a lease on the runs
it trains every ``trainer_heartbeat_s``; a running run not renewed for ``trainer_lease_s`` (its
trainer killed, its node gone) is requeued by whichever trainer sees it first, and resumes from
its last checkpoint. Aggressive preemption works across trainers: any trainer whose slots are
full may mark the least urgent run anywhere, and the trainer running it stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import sys
import time
from datetime import UTC, datetime, timedelta

import psutil
from sqlalchemy import func, text, update
from sqlmodel import Session, col, select

from labelloop.config import Settings
from labelloop.messaging.outbox import Transactions, UnitOfWork
from labelloop.metrics import EPOCHS_PER_SECOND, QUEUE_DEPTH, QUEUE_WAIT, RUN_DURATION
from schemas.envelope import utcnow
from trainer.devices import choose_device, visible_gpus
from trainer.models import ModelVersion, TrainingRequest
from trainer.queue import Candidate, Preemption, Running, RunStatus, pick_next, preemption_victim
from trainer.run_events import fail_run, planned_epochs, progress_event

log = logging.getLogger(__name__)


QUEUE_LOCK = 0x6C6C0003
"""The PostgreSQL advisory lock namespace of the run queue (beside the outbox's and relay's)."""


def owner_tag() -> str:
    """This trainer process: ``host:pid`` (a pod's host name is the pod's name)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(owner: str | None) -> bool:
    """Whether ``owner`` is a process of this host that no longer exists (known at once,
    without waiting for its lease to run out)."""
    host, _, pid = (owner or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def lock_queue(session: Session) -> None:
    """Hold the queue's lock to the end of the transaction (PostgreSQL; SQLite has one writer
    at a time, and a claim's conditional update fences it there)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": QUEUE_LOCK})


class Scheduler:
    """Starts queued runs by effective priority when a slot (and a device) is free."""

    def __init__(
        self, transactions: Transactions, settings: Settings, owner: str | None = None
    ) -> None:
        self.transactions = transactions
        self.settings = settings
        self.owner = owner or owner_tag()
        """What this trainer's runs record as their ``owner``."""
        self.running: dict[str, asyncio.Task[None]] = {}
        self.attempts: dict[str, int] = {}
        """The attempt of each run this trainer claimed (its lease is renewed while it runs)."""
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.preempting: set[str] = set()
        self.epochs: dict[str, int] = {}
        """Planned epochs of each running run (for the epochs/s gauge)."""
        self.poll_s = 0.5

    async def run(self) -> None:
        renewed = -math.inf
        try:
            while True:
                if time.monotonic() - renewed >= self.settings.trainer_heartbeat_s:
                    renewed = time.monotonic()
                    for lost in await asyncio.to_thread(self.heartbeat):
                        if lost not in self.preempting:  # else it is stepping aside already
                            self._stop(lost, "it is no longer this trainer's", kill=True)
                while len(self.running) < self.settings.trainer_max_concurrent_runs:
                    request = await asyncio.to_thread(self.claim_next)
                    if request is None:
                        break
                    self.running[request.id] = asyncio.create_task(self._supervise(request))
                if self.settings.trainer_preemption == Preemption.AGGRESSIVE.value:
                    await self._preempt()
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def _preempt(self) -> None:
        """Aggressive policy, across trainers: with every slot here taken, mark the least
        urgent run anywhere for a more urgent queued one; and stop each run of this trainer
        that any trainer marked (SIGTERM: it stops after its current epoch, keeps its
        checkpoint and requeues itself)."""
        if len(self.running) >= self.settings.trainer_max_concurrent_runs:
            await asyncio.to_thread(self.choose_preemption)
        for victim in await asyncio.to_thread(self.asked_to_stop):
            self._stop(victim, "a more urgent run takes its place")

    def _stop(self, request_id: str, why: str, *, kill: bool = False) -> None:
        process = self.processes.get(request_id)
        if process is None or process.returncode is not None:
            return
        log.info("stopping run %s: %s", request_id, why)
        self.preempting.add(request_id)
        if kill:
            process.kill()
        else:
            process.terminate()

    def choose_preemption(self) -> str | None:
        """Mark the run (of any trainer) to preempt now with the run it yields to; its id.

        Nothing while another preemption is under way or for a run another already stepped
        aside for (its mark stays on the requeued run until that is claimed again), and nothing
        for a run that has waited less than ``trainer_preempt_grace_s``: an idle trainer may
        claim it first.
        """
        with self.transactions.unit_of_work() as uow:
            lock_queue(uow.session)
            rows = uow.session.exec(
                select(TrainingRequest).where(
                    col(TrainingRequest.status).in_([RunStatus.QUEUED, RunStatus.RUNNING])
                )
            ).all()
            active = [r for r in rows if r.status == RunStatus.RUNNING]
            if any(r.preempted_by for r in active):
                return None  # a run is stopping: its slot comes free within an epoch
            now = utcnow()
            grace = timedelta(seconds=self.settings.trainer_preempt_grace_s)
            queued = [
                Candidate(r.id, r.task_id, r.priority, _aware(r.enqueued_at))
                for r in rows
                if r.status == RunStatus.QUEUED
            ]
            busy = {r.task_id for r in active}
            challenger = pick_next(queued, now, self.settings.trainer_aging_s, busy)
            if challenger is None or now - challenger.enqueued_at < grace:
                return None
            if any(r.preempted_by == challenger.request_id for r in rows):
                return None  # a run stepped aside for it already: its slot is the challenger's
            running = [Running(r.id, r.priority, _aware(r.started_at or now)) for r in active]
            victim = preemption_victim(
                Preemption.AGGRESSIVE, running, queued, now, self.settings.trainer_aging_s, busy
            )
            if victim is None:
                return None
            row = next(r for r in active if r.id == victim.request_id)
            row.preempted_by = challenger.request_id
            uow.session.add(row)
            log.info("run %s is to yield to run %s", row.id, challenger.request_id)
            return row.id

    def asked_to_stop(self) -> list[str]:
        """Runs of this trainer that a trainer (any) marked for preemption, not stopped yet."""
        with Session(self.transactions.engine) as session:
            marked = session.exec(
                select(TrainingRequest.id).where(
                    TrainingRequest.status == RunStatus.RUNNING,
                    TrainingRequest.owner == self.owner,
                    col(TrainingRequest.preempted_by).is_not(None),
                )
            ).all()
        return [r for r in marked if r in self.processes and r not in self.preempting]

    def heartbeat(self) -> list[str]:
        """Renew the lease on this trainer's runs, and requeue (or fail, after
        ``trainer_max_attempts``) the runs whose trainer is gone, in one transaction; the runs
        this trainer still trains that are no longer its own (to be stopped)."""
        with self.transactions.unit_of_work() as uow:
            lock_queue(uow.session)
            rows = uow.session.exec(
                select(TrainingRequest).where(TrainingRequest.status == RunStatus.RUNNING)
            ).all()
            now = utcnow()
            mine = {
                r.id
                for r in rows
                if r.owner == self.owner and self.attempts.get(r.id) == r.attempts
            }
            for row in rows:
                if row.id in mine:
                    row.heartbeat_at = now
                    uow.session.add(row)
                elif self._orphaned(row, now):
                    self._requeue_orphan(uow, row)
        return [r for r in self.running if r not in mine]

    def _orphaned(self, row: TrainingRequest, now: datetime) -> bool:
        if row.owner == self.owner:  # this process's tag, but not a run it trains
            return True
        if _dead_here(row.owner):
            return True
        renewed = row.heartbeat_at or row.started_at or row.enqueued_at
        return (now - _aware(renewed)).total_seconds() > self.settings.trainer_lease_s

    def _requeue_orphan(self, uow: UnitOfWork, request: TrainingRequest) -> None:
        if _crashes(request) >= self.settings.trainer_max_attempts:
            fail_run(uow, request, f"the trainer died during attempt {request.attempts}")
            return
        log.warning(
            "requeueing run %s of task %s: its trainer %s is gone",
            request.id,
            request.task_id,
            request.owner,
        )
        _back_to_queue(uow.session, request)

    def claim_next(self) -> TrainingRequest | None:
        """Pick the next run, mark it running and announce it (one transaction)."""
        device = choose_device(visible_gpus(), self.settings.trainer_gpu_min_free_mib)
        if device is None:
            return None  # every GPU is too full: wait for memory rather than fail
        with self.transactions.unit_of_work() as uow:
            session = uow.session
            lock_queue(session)
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
            task_id = choice.task_id
            version = _next_version(session, task_id)
            warm = _has_current_model(session, task_id)
            now = utcnow()
            claimed = session.execute(
                update(TrainingRequest)
                .where(
                    col(TrainingRequest.id) == choice.request_id,
                    col(TrainingRequest.status) == RunStatus.QUEUED,
                )
                .values(
                    status=RunStatus.RUNNING,
                    owner=self.owner,
                    started_at=now,
                    heartbeat_at=now,
                    attempts=TrainingRequest.attempts + 1,
                    version=version,
                    device=device,
                    preempted_by=None,
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None  # another trainer took it first: the next poll picks again
            request = session.get(TrainingRequest, choice.request_id, populate_existing=True)
            assert request is not None
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
        self.attempts[request.id] = request.attempts
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
            self.attempts.pop(request.id, None)
            self.epochs.pop(request.id, None)
            self.processes.pop(request.id, None)
            self.preempting.discard(request.id)

    def _after_crash(self, request_id: str, code: int) -> None:
        with self.transactions.unit_of_work() as uow:
            lock_queue(uow.session)
            request = uow.session.get(TrainingRequest, request_id)
            if (
                request is None
                or request.status != RunStatus.RUNNING
                or request.owner != self.owner
                or request.attempts != self.attempts.get(request_id)
            ):
                return  # finished, or no longer this trainer's attempt
            if _crashes(request) < self.settings.trainer_max_attempts:
                log.warning("run %s exited with %d; requeued", request_id, code)
                _back_to_queue(uow.session, request)
            else:
                fail_run(uow, request, f"the training process exited with status {code}")


def _back_to_queue(session: Session, request: TrainingRequest) -> None:
    """A run whose attempt ended without an outcome waits again (from its last checkpoint, if
    it kept one); the version that attempt was training is forgotten."""
    request.status, request.owner, request.preempted_by = RunStatus.QUEUED, None, None
    if request.version is not None:
        stale = session.get(ModelVersion, (request.version, request.task_id))
        if stale is not None:
            session.delete(stale)
    request.version = None
    session.add(request)


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
