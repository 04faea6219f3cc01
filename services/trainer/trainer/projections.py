"""trainer's projections: its copy of the labels, of each frame's validated hash and size, and
the ``model_versions`` registry (with the hashes of each version's files).

A version row follows its run's events: created (or reset, after a crashed attempt) by the
run's ``training.started`` at epoch 0, then published, rejected or failed; a preempted
attempt's row is dropped, since the resumed run claims its version again. Every change checks
the run id, so an event of one run never touches another run's version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col, select

from labelloop.bulk import found_keys, insert_rows, stored_rows
from labelloop.projections import Projection, task_documents
from schemas.events import (
    FrameProcessed,
    LabelsSubmitted,
    ModelPublished,
    ModelRejected,
    TrainingFailed,
    TrainingPreempted,
    TrainingStarted,
)
from trainer.models import ModelVersion, TrainingFrame, TrainingLabel


def apply_labels_submitted(session: Session, event: LabelsSubmitted) -> None:
    """The last submission of a frame wins."""
    for item in event.data.annotations:
        boxes = [box.model_dump() for box in item.boxes]
        row = session.get(TrainingLabel, (event.data.task_id, item.frame))
        if row is None:
            row = TrainingLabel(task_id=event.data.task_id, frame=item.frame, boxes=boxes)
        row.boxes = boxes
        session.add(row)


def apply_labels_batch(session: Session, events: Sequence[LabelsSubmitted]) -> None:
    """:func:`apply_labels_submitted` for a batch in order, with one lookup per task."""
    latest: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in events:
        for item in event.data.annotations:
            latest[(event.data.task_id, item.frame)] = [box.model_dump() for box in item.boxes]
    for task_id in {task for task, _ in latest}:
        frames = [frame for task, frame in latest if task == task_id]
        rows = {
            row.frame: row
            for row in stored_rows(session, TrainingLabel, "frame", frames, task_id=task_id)
        }
        for frame, row in rows.items():
            row.boxes = latest[(task_id, frame)]
            session.add(row)
        insert_rows(
            session,
            TrainingLabel,
            [
                {"task_id": task_id, "frame": frame, "boxes": latest[(task_id, frame)]}
                for frame in frames
                if frame not in rows
            ],
        )


def apply_frame_processed(session: Session, event: FrameProcessed) -> None:
    """What ingest validated of a frame; the first upload wins, as in ingest."""
    apply_frames_batch(session, [event])


def apply_frames_batch(session: Session, events: Sequence[FrameProcessed]) -> None:
    """:func:`apply_frame_processed` for a batch, with one lookup per task and chunk."""
    first: dict[tuple[str, str], FrameProcessed] = {}
    for event in events:
        first.setdefault((event.data.task_id, event.data.frame), event)
    for task_id in {task for task, _ in first}:
        frames = [frame for task, frame in first if task == task_id]
        known = found_keys(session, TrainingFrame, "frame", frames, task_id=task_id)
        insert_rows(
            session,
            TrainingFrame,
            [
                {
                    "task_id": task_id,
                    "frame": frame,
                    "object_key": data.object_key,
                    "sha256": data.sha256,
                    "width": data.width,
                    "height": data.height,
                }
                for frame in frames
                if frame not in known
                for data in (first[(task_id, frame)].data,)
            ],
        )


def _version_of(session: Session, task_id: str, version: int, run_id: str) -> ModelVersion | None:
    row = session.get(ModelVersion, (version, task_id))
    return row if row is not None and row.run_id == run_id else None


def apply_training_started(session: Session, event: TrainingStarted) -> ModelVersion | None:
    """Epoch 0 opens the version (later epochs are progress only)."""
    data = event.data
    if data.epoch != 0:
        return None
    row = session.get(ModelVersion, (data.version, data.task_id))
    if row is None:
        row = ModelVersion(
            task_id=data.task_id, version=data.version, status="training", run_id=data.run_id
        )
    row.status, row.run_id, row.created_at = "training", data.run_id, event.time
    row.metrics, row.current = None, False
    session.add(row)
    return row


def apply_model_published(session: Session, event: ModelPublished) -> None:
    """The version becomes the task's current one; the one before is retired."""
    data = event.data
    row = _version_of(session, data.task_id, data.version, data.run_id)
    if row is None:
        return
    for previous in session.exec(
        select(ModelVersion).where(
            ModelVersion.task_id == data.task_id, col(ModelVersion.current).is_(True)
        )
    ):
        if previous.version != data.version:
            previous.current, previous.status = False, "retired"
            session.add(previous)
    row.status, row.current, row.metrics = "published", True, data.metrics.model_dump()
    row.onnx_sha256, row.weights_sha256 = data.onnx_sha256, data.weights_sha256
    session.add(row)


def apply_model_rejected(session: Session, event: ModelRejected) -> None:
    data = event.data
    row = _version_of(session, data.task_id, data.version, data.run_id)
    if row is not None:
        row.status, row.metrics = "rejected", data.metrics.model_dump()
        session.add(row)


def apply_training_failed(session: Session, event: TrainingFailed) -> None:
    data = event.data
    row = _version_of(session, data.task_id, data.version, data.run_id)
    if row is not None:
        row.status = "failed"
        session.add(row)


def apply_training_preempted(session: Session, event: TrainingPreempted) -> None:
    data = event.data
    row = _version_of(session, data.task_id, data.version, data.run_id)
    if row is not None:
        session.delete(row)


def audit(session: Session, task_id: str) -> dict[str, list[Any]]:
    """Every model version of the task, with its metrics and verdict."""
    return {"models": task_documents(session, ModelVersion, task_id, col(ModelVersion.version))}


PROJECTION = Projection(
    tables=("training_labels", "training_frames", "model_versions"),
    appliers={
        FrameProcessed: apply_frame_processed,
        LabelsSubmitted: apply_labels_submitted,
        TrainingStarted: apply_training_started,
        ModelPublished: apply_model_published,
        ModelRejected: apply_model_rejected,
        TrainingFailed: apply_training_failed,
        TrainingPreempted: apply_training_preempted,
    },
    batch_appliers={FrameProcessed: apply_frames_batch, LabelsSubmitted: apply_labels_batch},
    audit=audit,
)
