"""One training run, in its own process: ``python -m trainer.run <request id>``.

Snapshot the task's labeled frames (object store, each checked against the hash ingest
validated; a frame that differs is left out and run.json says why) and labels (the trainer's
copy) into YOLO format, train (warm-started from the task's current model when it has one),
evaluate at the serving confidence, gate, export ONNX, register, and announce the outcome,
which commits with the version's state in one transaction. A failure is reported as
``training.failed`` with its cause; a crash (kill -9) is seen by the scheduler, which retries
or reports it.

Model files are loaded only if they hash to what was recorded when they were written: a
current version's ``model.pt`` that does not is not warm-started from (the run trains from
scratch and is gated on the floors alone; run.json says why), and a checkpoint that does not
is not resumed from (the run starts over).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from labelloop import __version__
from labelloop.config import Settings, get_settings
from labelloop.db import get_engine, in_chunks
from labelloop.integrity import NotAsRecorded, read_verified, sha256_of
from labelloop.messaging.outbox import Transactions
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from schemas.events import (
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    ModelRejected,
    ModelRejectedData,
    TrainingPreempted,
    TrainingPreemptedData,
)
from trainer.handlers import SOURCE, fail_run, planned_epochs, progress_event, run_links
from trainer.models import ModelVersion, TrainingFrame, TrainingLabel, TrainingRequest
from trainer.projections import PROJECTION
from trainer.queue import RunStatus
from trainer.registry import (
    MAX_ARTIFACT_BYTES,
    Artifacts,
    checkpoint_key,
    fetch_weights,
    onnx_key,
    register,
)

log = logging.getLogger("trainer.run")
SEED = 0


def _code_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            timeout=5,
        ).stdout.strip()
    except OSError:
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def _die_with_parent() -> None:
    """A run belongs to the scheduler that started it: if the trainer dies (kill -9), the run
    dies too (Linux ``PR_SET_PDEATHSIG``) instead of finishing a version that the restarted
    trainer has already requeued."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def _still_mine(request: TrainingRequest | None, attempt: int) -> bool:
    """Whether this process's attempt still owns the run (a fence against a stale process)."""
    return (
        request is not None and request.status == RunStatus.RUNNING and request.attempts == attempt
    )


def main(request_id: str) -> None:
    _die_with_parent()
    stop_requested = threading.Event()  # SIGTERM: checkpoint after this epoch (preemption)
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    settings = get_settings()
    engine = get_engine(settings.database_url)
    # the service's relay publishes what this process records
    transactions = Transactions(engine, settings.topic, projection=PROJECTION)
    store = ObjectStore.from_settings(settings)
    with Session(engine) as session:
        request = session.get(TrainingRequest, request_id)
        if request is None or request.status != RunStatus.RUNNING or request.version is None:
            log.error("run %s is not running", request_id)
            return
        task = session.get(Task, request.task_id)
        labels = session.exec(
            select(TrainingLabel).where(TrainingLabel.task_id == request.task_id)
        ).all()
        frames = {
            row.frame: row
            for chunk in in_chunks([label.frame for label in labels])
            for row in session.exec(
                select(TrainingFrame).where(
                    TrainingFrame.task_id == request.task_id, col(TrainingFrame.frame).in_(chunk)
                )
            )
        }
        current = session.exec(
            select(ModelVersion).where(
                ModelVersion.task_id == request.task_id, col(ModelVersion.current).is_(True)
            )
        ).first()
    assert task is not None
    attempt = request.attempts
    workdir = settings.trainer_work_dir / task.id / f"v{request.version}-a{attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        _run(
            settings,
            store,
            transactions,
            request,
            task,
            labels,
            frames,
            current,
            workdir,
            stop_requested,
        )
    except Exception as error:  # every failure is reported, with its cause
        log.exception("run %s failed", request_id)
        with transactions.unit_of_work() as uow:
            failing = uow.session.get(TrainingRequest, request_id)
            if _still_mine(failing, attempt):
                assert failing is not None
                fail_run(uow, failing, f"{type(error).__name__}: {error}")


def _run(
    settings: Settings,
    store: ObjectStore,
    transactions: Transactions,
    request: TrainingRequest,
    task: Task,
    labels: Sequence[TrainingLabel],
    frames: dict[str, TrainingFrame],
    current: ModelVersion | None,
    workdir: Path,
    stop_requested: threading.Event,
) -> None:
    """Snapshot, train (or resume), evaluate, gate, export, register and announce."""
    from trainer import training

    assert request.version is not None
    version, device, attempt = request.version, request.device or "cpu", request.attempts
    started = time.monotonic()
    max_frame_bytes = settings.ingest_max_frame_bytes
    dataset = _snapshot(store, task, labels, frames, workdir / "data", max_frame_bytes)
    incumbent, warm_start_refused = None, None
    if current is not None:
        try:
            incumbent = fetch_weights(
                store, task.id, current.version, workdir / "base.pt", sha256=current.weights_sha256
            )
        except NotAsRecorded as refused:
            warm_start_refused = f"v{current.version}'s weights refused: {refused}"
            log.error("run %s: %s; training from scratch", request.id, warm_start_refused)
    epochs = planned_epochs(settings, warm_start=incumbent is not None)
    start_from, done_before = incumbent, 0
    resume_refused = None
    if request.checkpoint_key:  # a preempted run resumes from its last epoch
        try:
            checkpoint = read_verified(
                store,
                request.checkpoint_key,
                request.checkpoint_sha256,
                max_bytes=MAX_ARTIFACT_BYTES,
            )
        except NotAsRecorded as refused:
            resume_refused = f"checkpoint refused: {refused}"
            log.error("run %s: %s; starting over", request.id, resume_refused)
        else:
            start_from = workdir / "resume.pt"
            start_from.write_bytes(checkpoint)
            done_before = min(request.epochs_done, epochs - 1)

    on_epoch = _progress(transactions, request, attempt, device, done_before)
    try:
        outcome = training.train(
            dataset,
            base_weights=start_from,
            out_dir=workdir / "train",
            epochs=epochs - done_before,
            imgsz=settings.model_imgsz,
            seed=SEED,
            device=device,
            on_epoch=on_epoch,
            should_stop=stop_requested.is_set,
        )
    except training.TrainingStopped as stopped:
        done = done_before + stopped.epochs_done
        _requeue_preempted(transactions, store, request.id, attempt, done, epochs, stopped)
        return

    def evaluate(weights: Path) -> Any:  # at the serving confidence, on the val split
        conf = settings.serve_conf
        return training.evaluate(
            weights, dataset, imgsz=settings.model_imgsz, conf=conf, device=device
        )

    metrics = evaluate(outcome.weights)
    current_metrics = evaluate(incumbent) if incumbent is not None else None
    reason = _gate(
        metrics, current_metrics, settings.trainer_min_recall, settings.trainer_min_precision
    )
    run: dict[str, Any] = {
        "run_id": request.id,
        "task_id": task.id,
        "version": version,
        "hyperparameters": {
            "epochs": epochs,
            "imgsz": settings.model_imgsz,
            "warm_start_from": current.version if current else None,
            "resumed_after_epoch": done_before or None,
            "serve_conf": settings.serve_conf,
            "warm_start_refused": warm_start_refused,
            "resume_refused": resume_refused,
        },
        "seed": SEED,
        "dataset": asdict(dataset) | {"root": str(dataset.root)},
        "code_version": _code_version(),
        "device": device,
        "duration_s": round(time.monotonic() - started, 1),
        "finished_at": datetime.now(UTC).isoformat(),
    }
    metric_values = _metric_dict(metrics)
    if reason is None:
        onnx = training.export_onnx(outcome.weights, imgsz=settings.model_imgsz)
        artifacts = register(
            store,
            task.id,
            version,
            metrics=metric_values,
            run=run,
            onnx=onnx,
            weights=outcome.weights,
        )
    else:
        artifacts = register(store, task.id, version, metrics=metric_values, run=run)
    _finish(transactions, request.id, attempt, metric_values, current_metrics, reason, artifacts)


def _progress(
    transactions: Transactions,
    request: TrainingRequest,
    attempt: int,
    device: str,
    done_before: int,
) -> Callable[[int, int], None]:
    """Announce each finished epoch (``training.started`` with its progress)."""

    def on_epoch(epoch: int, total: int) -> None:
        with transactions.unit_of_work() as uow:
            uow.record(
                progress_event(
                    request, attempt, device, epoch=done_before + epoch, epochs=done_before + total
                )
            )

    return on_epoch


def _snapshot(
    store: ObjectStore,
    task: Task,
    labels: Sequence[TrainingLabel],
    frames: dict[str, TrainingFrame],
    folder: Path,
    max_frame_bytes: int,
) -> Any:
    """The task's labeled frames and labels (the trainer's copies) in YOLO format.

    A frame trains only as ingest validated it: its object is read no further than the size
    limit and must hash to the sha256 of its ``frame.processed``; one replaced since is left
    out, logged, and listed with its reason in the dataset's ``skipped`` (run.json).
    """
    from trainer import training

    items, skipped = [], []
    for row in labels:
        frame = frames.get(row.frame)
        try:
            if frame is None:
                raise NotAsRecorded(
                    f"tasks/{task.id}/data/{row.frame}", "the trainer has no validated record of it"
                )
            image = read_verified(store, frame.object_key, frame.sha256, max_bytes=max_frame_bytes)
        except NotAsRecorded as refused:
            log.warning("task %s: frame %s left out: %s", task.id, row.frame, refused.reason)
            skipped.append((row.frame, refused.reason))
            continue
        items.append(
            training.LabeledFrame(
                name=row.frame,
                image=image,
                width=frame.width,
                height=frame.height,
                boxes=[(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in row.boxes],
            )
        )
    return training.write_dataset(folder, items, list(task.labels), seed=SEED, skipped=skipped)


def _requeue_preempted(
    transactions: Transactions,
    store: ObjectStore,
    request_id: str,
    attempt: int,
    epochs_done: int,
    epochs: int,
    stopped: Any,
) -> None:
    """Keep the checkpoint, put the run back in the queue to resume from it, and say so."""
    with transactions.unit_of_work() as uow:
        request = uow.session.get(TrainingRequest, request_id)
        if not _still_mine(request, attempt):
            return
        assert request is not None and request.version is not None
        key = checkpoint_key(request.task_id, request.id)
        checkpoint = stopped.checkpoint.read_bytes()
        store.put_bytes(key, checkpoint)
        preempted = TrainingPreempted.create(
            TrainingPreemptedData(
                task_id=request.task_id,
                run_id=request.id,
                version=request.version,
                epochs_done=epochs_done,
                epochs=epochs,
                checkpoint_key=key,
                checkpoint_sha256=sha256_of(checkpoint),
                preempted_by=request.preempted_by or "",
            ),
            source=SOURCE,
            key=(request.id, attempt, "preempted"),
            taskid=request.task_id,
            **run_links(request),
        )
        uow.record(preempted)
        request.status, request.owner, request.version = RunStatus.QUEUED, None, None
        request.checkpoint_key, request.epochs_done = key, epochs_done
        request.checkpoint_sha256 = preempted.data.checkpoint_sha256
        request.preemptions += 1
        request.preempted_by = None
        uow.session.add(request)
    log.info("run %s preempted after %d of %d epochs; requeued", request_id, epochs_done, epochs)


def _metric_dict(metrics: Any) -> dict[str, float]:
    return {key: round(float(value), 4) for key, value in asdict(metrics).items()}


def _gate(metrics: Any, current: Any, min_recall: float, min_precision: float) -> str | None:
    """None when the version may be published, else why not."""
    if metrics.recall < min_recall or metrics.precision < min_precision:
        return (
            f"recall {metrics.recall:.2f} / precision {metrics.precision:.2f} at the serving "
            f"confidence are below the floor ({min_recall:.2f} / {min_precision:.2f})"
        )
    if current is not None and metrics.map50 <= current.map50:
        return f"mAP50 {metrics.map50:.3f} does not beat the current model's {current.map50:.3f}"
    return None


def _finish(
    transactions: Transactions,
    request_id: str,
    attempt: int,
    metrics: dict[str, float],
    current_metrics: Any,
    reason: str | None,
    artifacts: Artifacts,
) -> None:
    with transactions.unit_of_work() as uow:
        session = uow.session
        request = session.get(TrainingRequest, request_id)
        if not _still_mine(request, attempt):
            log.warning("run %s: attempt %d no longer owns it; result dropped", request_id, attempt)
            return
        assert request is not None and request.version is not None
        model_metrics = ModelMetrics(**metrics)
        if reason is None:
            published = ModelPublished.create(
                ModelPublishedData(
                    task_id=request.task_id,
                    run_id=request.id,
                    version=request.version,
                    metrics=model_metrics,
                    onnx_key=onnx_key(request.task_id, request.version),
                    onnx_sha256=artifacts.onnx_sha256,
                    weights_sha256=artifacts.weights_sha256,
                ),
                source=SOURCE,
                key=(request.task_id, request.version),
                taskid=request.task_id,
                **run_links(request),
            )
            uow.record(published)
        else:
            rejected = ModelRejected.create(
                ModelRejectedData(
                    task_id=request.task_id,
                    run_id=request.id,
                    version=request.version,
                    metrics=model_metrics,
                    current_metrics=ModelMetrics(**_metric_dict(current_metrics))
                    if current_metrics is not None
                    else None,
                    reason=reason,
                ),
                source=SOURCE,
                key=(request.task_id, request.version),
                taskid=request.task_id,
                **run_links(request),
            )
            uow.record(rejected)
        request.status, request.finished_at = RunStatus.DONE, datetime.now(UTC)
        request.checkpoint_key, request.checkpoint_sha256 = None, None
        session.add(request)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(sys.argv[1])
