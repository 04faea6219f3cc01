"""One training run, in its own process: ``python -m trainer.run <request id>``.

Snapshot the task's labeled frames (object store) and labels (the trainer's copy) into YOLO
format, train (warm-started from the task's current model when it has one), evaluate at the
serving confidence, gate, export ONNX, register, and announce the outcome, which commits with
the version's state in one transaction. A failure is reported as ``training.failed`` with its
cause; a crash (kill -9) is seen by the scheduler, which retries or reports it.
"""

from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from PIL import Image
from sqlmodel import Session, col, select

from labelloop import __version__
from labelloop.config import get_settings
from labelloop.db import get_engine
from labelloop.messaging.outbox import Transactions
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from schemas.events import (
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    ModelRejected,
    ModelRejectedData,
    TrainingStarted,
    TrainingStartedData,
)
from schemas.topics import Topic
from trainer.handlers import SOURCE, fail_run
from trainer.models import ModelVersion, TrainingLabel, TrainingRequest
from trainer.queue import RunStatus
from trainer.registry import fetch_weights, onnx_key, register

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


def main(request_id: str) -> None:
    from trainer import training

    settings = get_settings()
    engine = get_engine(settings.database_url)
    transactions = Transactions(engine, settings.topic)  # the service's relay publishes
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
        current = session.exec(
            select(ModelVersion).where(
                ModelVersion.task_id == request.task_id, col(ModelVersion.current).is_(True)
            )
        ).first()
    assert task is not None
    version, device = request.version, request.device or "cpu"
    workdir = settings.trainer_work_dir / task.id / f"v{version}-a{request.attempts}"
    shutil.rmtree(workdir, ignore_errors=True)
    started = time.monotonic()
    try:
        items = []
        for row in labels:
            image = store.get_bytes(f"tasks/{task.id}/data/{row.frame}")
            width, height = Image.open(io.BytesIO(image)).size
            items.append(
                training.LabeledFrame(
                    name=row.frame,
                    image=image,
                    width=width,
                    height=height,
                    boxes=[(b["label"], b["x"], b["y"], b["w"], b["h"]) for b in row.boxes],
                )
            )
        dataset = training.write_dataset(workdir / "data", items, list(task.labels), seed=SEED)
        base = None
        if current is not None:
            base = fetch_weights(store, task.id, current.version, workdir / "base.pt")
        epochs = settings.trainer_warm_epochs if base else settings.trainer_epochs

        def on_epoch(epoch: int, total: int) -> None:
            with transactions.session() as outbox:
                outbox.emit(
                    TrainingStarted.create(
                        TrainingStartedData(
                            task_id=task.id,
                            run_id=request.id,
                            version=version,
                            device=device,
                            epoch=epoch,
                            epochs=total,
                        ),
                        source=SOURCE,
                        key=(request.id, request.attempts, epoch),
                        taskid=task.id,
                    ),
                    Topic.TRAINER_EVENTS,
                )

        outcome = training.train(
            dataset,
            base_weights=base,
            out_dir=workdir / "train",
            epochs=epochs,
            imgsz=settings.model_imgsz,
            seed=SEED,
            device=device,
            on_epoch=on_epoch,
        )
        metrics = training.evaluate(
            outcome.weights,
            dataset,
            imgsz=settings.model_imgsz,
            conf=settings.serve_conf,
            device=device,
        )
        current_metrics = None
        if base is not None:  # the incumbent, judged on the same split
            current_metrics = training.evaluate(
                base,
                dataset,
                imgsz=settings.model_imgsz,
                conf=settings.serve_conf,
                device=device,
            )
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
                "serve_conf": settings.serve_conf,
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
            register(
                store,
                task.id,
                version,
                metrics=metric_values,
                run=run,
                onnx=onnx,
                weights=outcome.weights,
            )
        else:
            register(store, task.id, version, metrics=metric_values, run=run)
        _finish(transactions, request_id, metric_values, current_metrics, reason)
    except Exception as error:  # every failure is reported, with its cause
        log.exception("run %s failed", request_id)
        with transactions.session() as outbox:
            failing = outbox.session.get(TrainingRequest, request_id)
            assert failing is not None
            fail_run(outbox, failing, f"{type(error).__name__}: {error}")


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
    metrics: dict[str, float],
    current_metrics: Any,
    reason: str | None,
) -> None:
    with transactions.session() as outbox:
        session = outbox.session
        request = session.get(TrainingRequest, request_id)
        assert request is not None and request.version is not None
        version = session.get(ModelVersion, (request.version, request.task_id))
        assert version is not None
        version.metrics = metrics
        model_metrics = ModelMetrics(**metrics)
        if reason is None:
            for previous in session.exec(
                select(ModelVersion).where(
                    ModelVersion.task_id == request.task_id, col(ModelVersion.current).is_(True)
                )
            ):
                previous.current, previous.status = False, "retired"
                session.add(previous)
            version.status, version.current = "published", True
            outbox.emit(
                ModelPublished.create(
                    ModelPublishedData(
                        task_id=request.task_id,
                        run_id=request.id,
                        version=request.version,
                        metrics=model_metrics,
                        onnx_key=onnx_key(request.task_id, request.version),
                    ),
                    source=SOURCE,
                    key=(request.task_id, request.version),
                    taskid=request.task_id,
                ),
                Topic.TRAINER_EVENTS,
            )
        else:
            version.status = "rejected"
            outbox.emit(
                ModelRejected.create(
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
                ),
                Topic.TRAINER_EVENTS,
            )
        session.add(version)
        request.status, request.finished_at = RunStatus.DONE, datetime.now(UTC)
        session.add(request)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    main(sys.argv[1])
