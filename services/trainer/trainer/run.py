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
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from labelloop import __version__
from labelloop.config import Settings, get_settings
from labelloop.db import get_engine, in_chunks
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.messaging.outbox import Transactions
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from schemas.envelope import utcnow
from trainer import training
from trainer.dataset import DatasetInfo, LabeledFrame, write_dataset
from trainer.models import ModelVersion, TrainingFrame, TrainingLabel, TrainingRequest
from trainer.projections import PROJECTION
from trainer.queue import RunStatus
from trainer.registry import MAX_ARTIFACT_BYTES, Artifacts, fetch_weights, register
from trainer.run_events import (
    Verdict,
    epoch_reporter,
    fail_run,
    planned_epochs,
    record_outcome,
    requeue_preempted,
    still_mine,
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
            if still_mine(failing, attempt):
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
    assert request.version is not None
    device, attempt = request.device or "cpu", request.attempts
    started = time.monotonic()
    max_frame_bytes = settings.ingest_max_frame_bytes
    dataset = _snapshot(store, task, labels, frames, workdir / "data", max_frame_bytes)
    start = _starting_point(settings, store, request, current, workdir)
    try:
        outcome = training.train(
            dataset,
            base_weights=start.weights,
            out_dir=workdir / "train",
            epochs=start.epochs - start.done_before,
            imgsz=settings.model_imgsz,
            seed=SEED,
            device=device,
            on_epoch=epoch_reporter(
                transactions,
                store,
                request,
                attempt,
                device,
                start.done_before,
                settings.trainer_checkpoint_interval_s,
            ),
            should_stop=stop_requested.is_set,
        )
    except training.TrainingStopped as stopped:
        progress = (start.done_before + stopped.epochs_done, start.epochs)
        requeue_preempted(transactions, store, request, attempt, progress, stopped.checkpoint)
        return
    verdict = _judge(settings, dataset, device, outcome.weights, start.incumbent)
    run = _run_record(settings, request, current, dataset, start, device, started)
    artifacts = _register(settings, store, request, verdict, run, outcome.weights, dataset)
    record_outcome(transactions, request.id, attempt, verdict, artifacts)


@dataclass(frozen=True)
class StartingPoint:
    """What a run trains from, and why what it might have started from was refused."""

    incumbent: Path | None
    """The task's current model's weights (verified): warm-started from, and evaluated against."""
    weights: Path | None
    """What training starts from: the run's checkpoint, else the incumbent, else nothing."""
    epochs: int
    """Planned for the whole run."""
    done_before: int
    """Epochs the checkpoint already holds (0 without one)."""
    warm_start_refused: str | None = None
    resume_refused: str | None = None


def _starting_point(
    settings: Settings,
    store: ObjectStore,
    request: TrainingRequest,
    current: ModelVersion | None,
    workdir: Path,
) -> StartingPoint:
    """Warm-start from the current model and, for a preempted run, resume from its last epoch:
    each only from a file whose bytes hash to what was recorded when it was written."""
    incumbent, warm_start_refused = None, None
    if current is not None:
        try:
            incumbent = fetch_weights(
                store,
                request.task_id,
                current.version,
                workdir / "base.pt",
                sha256=current.weights_sha256,
            )
        except NotAsRecorded as refused:
            warm_start_refused = f"v{current.version}'s weights refused: {refused}"
            log.error("run %s: %s; training from scratch", request.id, warm_start_refused)
    epochs = planned_epochs(settings, warm_start=incumbent is not None)
    start = StartingPoint(incumbent, incumbent, epochs, 0, warm_start_refused)
    if not request.checkpoint_key:
        return start
    try:
        checkpoint = read_verified(
            store, request.checkpoint_key, request.checkpoint_sha256, max_bytes=MAX_ARTIFACT_BYTES
        )
    except NotAsRecorded as refused:
        resume_refused = f"checkpoint refused: {refused}"
        log.error("run %s: %s; starting over", request.id, resume_refused)
        return replace(start, resume_refused=resume_refused)
    resume_from = workdir / "resume.pt"
    resume_from.write_bytes(checkpoint)
    return replace(start, weights=resume_from, done_before=min(request.epochs_done, epochs - 1))


def _snapshot(
    store: ObjectStore,
    task: Task,
    labels: Sequence[TrainingLabel],
    frames: dict[str, TrainingFrame],
    folder: Path,
    max_frame_bytes: int,
) -> DatasetInfo:
    """The task's labeled frames and labels (the trainer's copies) in YOLO format.

    A frame trains only as ingest validated it: its object is read no further than the size
    limit and must hash to the sha256 of its ``frame.processed``; one replaced since is left
    out, logged, and listed with its reason in the dataset's ``skipped`` (run.json).
    """
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
            LabeledFrame(
                name=row.frame,
                image=image,
                width=frame.width,
                height=frame.height,
                boxes=[(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in row.boxes],
            )
        )
    return write_dataset(folder, items, list(task.labels), seed=SEED, skipped=skipped)


def _judge(
    settings: Settings,
    dataset: DatasetInfo,
    device: str,
    weights: Path,
    incumbent: Path | None,
) -> Verdict:
    """Evaluate the new weights, and the incumbent's, at the serving confidence on the val
    split; gate the new version on them."""

    def evaluate(path: Path) -> training.Metrics:
        return training.evaluate(
            path, dataset, imgsz=settings.model_imgsz, conf=settings.serve_conf, device=device
        )

    metrics = evaluate(weights)
    current = evaluate(incumbent) if incumbent is not None else None
    reason = _gate(metrics, current, settings.trainer_min_recall, settings.trainer_min_precision)
    return Verdict(
        _metric_dict(metrics), _metric_dict(current) if current is not None else None, reason
    )


def _metric_dict(metrics: training.Metrics) -> dict[str, float]:
    return {key: round(float(value), 4) for key, value in asdict(metrics).items()}


def _gate(
    metrics: training.Metrics,
    current: training.Metrics | None,
    min_recall: float,
    min_precision: float,
) -> str | None:
    """None when the version may be published, else why not."""
    if metrics.recall < min_recall or metrics.precision < min_precision:
        return (
            f"recall {metrics.recall:.2f} / precision {metrics.precision:.2f} at the serving "
            f"confidence are below the floor ({min_recall:.2f} / {min_precision:.2f})"
        )
    if current is not None and metrics.map50 <= current.map50:
        return f"mAP50 {metrics.map50:.3f} does not beat the current model's {current.map50:.3f}"
    return None


def _run_record(
    settings: Settings,
    request: TrainingRequest,
    current: ModelVersion | None,
    dataset: DatasetInfo,
    start: StartingPoint,
    device: str,
    started: float,
) -> dict[str, Any]:
    """run.json: how the version was made (hyperparameters, seed, dataset, code, device)."""
    return {
        "run_id": request.id,
        "task_id": request.task_id,
        "version": request.version,
        "hyperparameters": {
            "epochs": start.epochs,
            "imgsz": settings.model_imgsz,
            "warm_start_from": current.version if current else None,
            "resumed_after_epoch": start.done_before or None,
            "serve_conf": settings.serve_conf,
            "warm_start_refused": start.warm_start_refused,
            "resume_refused": start.resume_refused,
        },
        "seed": SEED,
        "dataset": {key: value for key, value in asdict(dataset).items() if key != "train_frames"}
        | {"root": str(dataset.root)},
        "code_version": _code_version(),
        "device": device,
        "duration_s": round(time.monotonic() - started, 1),
        "finished_at": utcnow().isoformat(),
    }


def _register(
    settings: Settings,
    store: ObjectStore,
    request: TrainingRequest,
    verdict: Verdict,
    run: dict[str, Any],
    weights: Path,
    dataset: DatasetInfo,
) -> Artifacts:
    """Register the version: with its ONNX export and weights only if it is published."""
    assert request.version is not None
    task_id, version = request.task_id, request.version
    if verdict.reason is not None:
        return register(store, task_id, version, metrics=verdict.metrics, run=run)
    onnx = training.export_onnx(weights, imgsz=settings.model_imgsz)
    return register(
        store,
        task_id,
        version,
        metrics=verdict.metrics,
        run=run,
        onnx=onnx,
        weights=weights,
        trained_frames=dataset.train_frames,
    )


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(sys.argv[1])
