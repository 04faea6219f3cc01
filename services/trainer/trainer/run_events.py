"""What a training run announces, built and recorded in one place for the scheduler and the run.

``training.started`` at epoch 0 (by the scheduler, as it claims the run) and after each epoch
(by the run process), then one outcome: ``training.preempted``, ``model.published``,
``model.rejected`` or ``training.failed``. Every event of a run carries the same links
(:func:`run_links`), and each outcome is recorded with the request's new state in one
transaction, only while the attempt that produced it still owns the run (:func:`still_mine`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from labelloop.config import Settings
from labelloop.integrity import sha256_of
from labelloop.messaging.outbox import Transactions, UnitOfWork
from labelloop.storage import ObjectStore
from schemas.envelope import utcnow
from schemas.events import (
    EpochMetrics,
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    ModelRejected,
    ModelRejectedData,
    TrainingFailed,
    TrainingFailedData,
    TrainingPreempted,
    TrainingPreemptedData,
    TrainingStarted,
    TrainingStartedData,
)
from trainer import IDENTITY
from trainer.models import TrainingRequest
from trainer.queue import RunStatus
from trainer.registry import Artifacts, checkpoint_key, onnx_key, trained_frames_key
from trainer.training import EpochCallback, EpochDone

log = logging.getLogger(__name__)


class RunLinks(TypedDict):
    causationid: str | None
    correlationid: str


def run_links(request: TrainingRequest) -> RunLinks:
    """What links a run's events to their cause: the (last merged) threshold event that queued
    it, and the run id shared by every event of the run."""
    threshold = request.threshold_event_ids[-1] if request.threshold_event_ids else None
    return RunLinks(causationid=threshold, correlationid=request.id)


def planned_epochs(settings: Settings, *, warm_start: bool) -> int:
    """A first model trains from scratch; later ones fine-tune the current one, for fewer."""
    return settings.trainer_warm_epochs if warm_start else settings.trainer_epochs


def still_mine(request: TrainingRequest | None, attempt: int) -> bool:
    """Whether this process's attempt still owns the run (a fence against a stale process)."""
    return (
        request is not None and request.status == RunStatus.RUNNING and request.attempts == attempt
    )


def progress_event(
    request: TrainingRequest,
    attempt: int,
    device: str,
    *,
    epoch: int,
    epochs: int,
    metrics: EpochMetrics | None = None,
) -> TrainingStarted:
    """``training.started``: at epoch 0 when a run starts, then after each epoch it finishes
    (with that epoch's losses and validation figures)."""
    assert request.version is not None
    return TrainingStarted.create(
        TrainingStartedData(
            task_id=request.task_id,
            run_id=request.id,
            version=request.version,
            device=device,
            epoch=epoch,
            epochs=epochs,
            metrics=metrics,
        ),
        source=IDENTITY.source,
        key=(request.id, attempt, epoch),
        taskid=request.task_id,
        **run_links(request),
    )


def epoch_reporter(
    transactions: Transactions,
    store: ObjectStore,
    request: TrainingRequest,
    attempt: int,
    device: str,
    done_before: int,
    checkpoint_interval_s: float,
) -> EpochCallback:
    """The run's ``on_epoch``: announces each finished epoch (``training.started`` with its
    progress, counting the epochs a resumed run did before, and its figures) and, at most every
    ``checkpoint_interval_s``, keeps the epoch's checkpoint with the run (while this attempt
    owns it): a run whose trainer is killed resumes there, on whichever trainer claims it."""
    last_kept = time.monotonic()

    def on_epoch(epoch: EpochDone) -> None:
        nonlocal last_kept
        done = done_before + epoch.done
        kept = None
        if (
            epoch.done < epoch.epochs
            and time.monotonic() - last_kept >= checkpoint_interval_s
            and epoch.checkpoint.is_file()
        ):  # uploaded before the transaction: no row or queue lock waits on the store
            kept = store_checkpoint(store, request, done, epoch.checkpoint)
            last_kept = time.monotonic()
        with transactions.unit_of_work() as uow:
            uow.record(
                progress_event(
                    request,
                    attempt,
                    device,
                    epoch=done,
                    epochs=done_before + epoch.epochs,
                    metrics=epoch.metrics,
                )
            )
            row = uow.session.get(TrainingRequest, request.id) if kept else None
            superseded = name_checkpoint(uow, row, attempt, kept) if kept else None
        if superseded is not None:
            _forget(store, superseded)

    return on_epoch


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint in the store: its key, its hash and the epochs it holds."""

    key: str
    sha256: str
    epochs_done: int


def store_checkpoint(
    store: ObjectStore, request: TrainingRequest, epochs_done: int, checkpoint: Path
) -> Checkpoint:
    """Put the checkpoint in the store under a key of its own (no row names it yet)."""
    data = checkpoint.read_bytes()
    key = checkpoint_key(request.task_id, request.id, epochs_done)
    store.put_bytes(key, data)
    return Checkpoint(key, sha256_of(data), epochs_done)


def name_checkpoint(
    uow: UnitOfWork, request: TrainingRequest | None, attempt: int, kept: Checkpoint
) -> str | None:
    """Name ``kept`` on the run while ``attempt`` owns it; the key to delete after the commit:
    the checkpoint it replaces, or ``kept`` itself when the run is no longer this attempt's."""
    if request is None or not still_mine(request, attempt):
        return kept.key
    replaced = request.checkpoint_key
    request.checkpoint_key, request.checkpoint_sha256 = kept.key, kept.sha256
    request.epochs_done = kept.epochs_done
    uow.session.add(request)
    return replaced if replaced != kept.key else None


def _forget(store: ObjectStore, key: str) -> None:
    """Delete a checkpoint no row names any more; one left behind only takes space."""
    try:
        store.remove(key)
    except Exception:  # the store may be briefly away
        log.warning("could not delete the superseded checkpoint %s", key, exc_info=True)


def fail_run(uow: UnitOfWork, request: TrainingRequest, error: str) -> None:
    """Mark a run failed, its version too, and say why."""
    request.status, request.error, request.finished_at = RunStatus.FAILED, error[:2000], utcnow()
    uow.session.add(request)
    failed = TrainingFailed.create(
        TrainingFailedData(
            task_id=request.task_id,
            run_id=request.id,
            version=request.version or 1,
            error=error[:2000],
        ),
        source=IDENTITY.source,
        key=(request.id, request.attempts),
        taskid=request.task_id,
        **run_links(request),
    )
    uow.record(failed)


def requeue_preempted(
    transactions: Transactions,
    store: ObjectStore,
    request: TrainingRequest,
    attempt: int,
    progress: tuple[int, int],
    checkpoint: Path,
) -> None:
    """Keep the checkpoint, put the run back in the queue to resume from it, and say so.

    ``progress`` is ``(epochs done, epochs planned)``. Nothing is kept once the attempt no
    longer owns the run.
    """
    epochs_done, epochs = progress
    kept = store_checkpoint(store, request, epochs_done, checkpoint)
    with transactions.unit_of_work() as uow:
        row = uow.session.get(TrainingRequest, request.id)
        superseded = name_checkpoint(uow, row, attempt, kept)
        if row is not None and still_mine(row, attempt):
            assert row.version is not None
            preempted = TrainingPreempted.create(
                TrainingPreemptedData(
                    task_id=row.task_id,
                    run_id=row.id,
                    version=row.version,
                    epochs_done=epochs_done,
                    epochs=epochs,
                    checkpoint_key=kept.key,
                    checkpoint_sha256=kept.sha256,
                    preempted_by=row.preempted_by or "",
                ),
                source=IDENTITY.source,
                key=(row.id, attempt, "preempted"),
                taskid=row.task_id,
                **run_links(row),
            )
            uow.record(preempted)
            row.status, row.owner, row.version = RunStatus.QUEUED, None, None
            row.preemptions += 1  # preempted_by stays until it is claimed again: one victim
            uow.session.add(row)
    if superseded is not None:
        _forget(store, superseded)
    log.info("run %s preempted after %d of %d epochs; requeued", request.id, epochs_done, epochs)


@dataclass(frozen=True)
class Verdict:
    """A trained version's metrics, the current model's (if any), and why it is not published
    (None: it is)."""

    metrics: dict[str, float]
    current_metrics: dict[str, float] | None
    reason: str | None


def record_outcome(
    transactions: Transactions,
    request_id: str,
    attempt: int,
    verdict: Verdict,
    artifacts: Artifacts,
) -> None:
    """``model.published`` or ``model.rejected``, with the run marked done, in one transaction."""
    with transactions.unit_of_work() as uow:
        request = uow.session.get(TrainingRequest, request_id)
        if not still_mine(request, attempt):
            log.warning("run %s: attempt %d no longer owns it; result dropped", request_id, attempt)
            return
        assert request is not None
        uow.record(_outcome_event(request, verdict, artifacts))
        request.status, request.finished_at = RunStatus.DONE, utcnow()
        request.checkpoint_key, request.checkpoint_sha256 = None, None
        uow.session.add(request)


def _outcome_event(
    request: TrainingRequest, verdict: Verdict, artifacts: Artifacts
) -> ModelPublished | ModelRejected:
    assert request.version is not None
    metrics = ModelMetrics(**verdict.metrics)
    if verdict.reason is None:
        return ModelPublished.create(
            ModelPublishedData(
                task_id=request.task_id,
                run_id=request.id,
                version=request.version,
                metrics=metrics,
                onnx_key=onnx_key(request.task_id, request.version),
                onnx_sha256=artifacts.onnx_sha256,
                weights_sha256=artifacts.weights_sha256,
                trained_frames_key=(
                    trained_frames_key(request.task_id, request.version)
                    if artifacts.trained_frames_sha256
                    else None
                ),
                trained_frames_sha256=artifacts.trained_frames_sha256,
            ),
            source=IDENTITY.source,
            key=(request.task_id, request.version),
            taskid=request.task_id,
            **run_links(request),
        )
    current = verdict.current_metrics
    return ModelRejected.create(
        ModelRejectedData(
            task_id=request.task_id,
            run_id=request.id,
            version=request.version,
            metrics=metrics,
            current_metrics=ModelMetrics(**current) if current is not None else None,
            reason=verdict.reason,
        ),
        source=IDENTITY.source,
        key=(request.task_id, request.version),
        taskid=request.task_id,
        **run_links(request),
    )
