"""ingest's handlers: fetch and validate frames, record manifests, announce complete data."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, update
from sqlmodel import Session, select

from ingest.domain import (
    FrameKey,
    ImageInfo,
    ManifestError,
    ManifestKey,
    OutsideTask,
    Rejection,
    inspect_image,
    missing_frames,
    parse_key,
    parse_manifest,
)
from ingest.models import Frame, TaskIngest
from ingest.projections import apply_frame_processed, apply_frame_rejected
from labelloop.messaging.outbox import Transactions, UnitOfWork
from labelloop.metrics import FRAMES
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from schemas.events import (
    FrameProcessed,
    FrameProcessedData,
    FrameRejected,
    FrameRejectedData,
    TaskDataReady,
    TaskDataReadyData,
)
from schemas.s3 import S3EventNotification, S3EventRecord
from schemas.topics import Topic

log = logging.getLogger(__name__)
SOURCE = "/labelloop/ingest"
CONSUMER = "ingest"


@dataclass(frozen=True)
class IngestDeps:
    store: ObjectStore
    transactions: Transactions
    max_frame_bytes: int
    max_frame_pixels: int
    max_manifest_bytes: int = 10 * 1024 * 1024
    raw_event_keys: bool = False
    """The store sends object keys unencoded in its records (versitygw), not URL-encoded."""


async def handle_storage_event(notification: S3EventNotification, deps: IngestDeps) -> None:
    """One object-store notification: each created object under ``tasks/`` is a frame or a
    manifest."""
    for record in notification.records:
        await handle_record(record.with_raw_key() if deps.raw_event_keys else record, deps)


async def handle_record(record: S3EventRecord, deps: IngestDeps) -> None:
    """One created object, notified or found by the reconciler: recorded once by key."""
    if not record.is_created or record.bucket != deps.store.bucket:
        return
    ref = parse_key(record.object_key)
    if ref is None:
        return
    if isinstance(ref, ManifestKey):
        await _on_manifest(ref, record, deps)
    else:
        await _on_frame(ref, record, deps)


def _message_id(record: S3EventRecord) -> str:
    return f"{record.object_key}@{record.s3.object.sequencer or record.s3.object.etag}"


async def _on_frame(ref: FrameKey | OutsideTask, record: S3EventRecord, deps: IngestDeps) -> None:
    key = record.object_key
    with Session(deps.transactions.engine) as session:
        if session.get(Task, ref.task_id) is None:
            log.warning("ignoring %s: no task %s", key, ref.task_id)
            return
        if session.get(Frame, (ref.task_id, ref.name)) is not None:
            return  # already processed: a redelivery, or a re-upload (first upload wins)
    outcome = await _inspect_object(ref, record, deps)
    with deps.transactions.unit_of_work(CONSUMER, _message_id(record)) as uow:
        if uow.already_done:
            return
        ingest = _lock_task(uow, ref.task_id)
        if uow.session.get(Frame, (ref.task_id, ref.name)) is not None:
            return
        if isinstance(outcome, tuple):
            outcome = _check_declared_hash(ingest, ref.name, outcome[1]) or outcome
        frame = _record_frame(uow, ref, key, outcome)
        FRAMES.labels(frame.status).inc()
        log.info("%s %s/%s", frame.status, ref.task_id, ref.name)
        _maybe_data_ready(uow, ingest)


async def _inspect_object(
    ref: FrameKey | OutsideTask, record: S3EventRecord, deps: IngestDeps
) -> tuple[ImageInfo, str, int] | Rejection:
    if isinstance(ref, OutsideTask):
        return Rejection("outside_task", ref.reason)
    declared_size = record.s3.object.size
    if declared_size is not None and declared_size > deps.max_frame_bytes:
        return Rejection(
            "too_large", f"{declared_size:,} bytes is over the limit of {deps.max_frame_bytes:,}"
        )
    if declared_size == 0:
        return Rejection("empty", "the file is empty (0 bytes)")
    data = await asyncio.to_thread(deps.store.get_bytes, record.object_key)
    return await asyncio.to_thread(_inspect_bytes, data, deps.max_frame_pixels)


def _inspect_bytes(data: bytes, max_pixels: int) -> tuple[ImageInfo, str, int] | Rejection:
    result = inspect_image(data, max_pixels=max_pixels)
    if isinstance(result, Rejection):
        return result
    return result, hashlib.sha256(data).hexdigest(), len(data)


def _lock_task(uow: UnitOfWork, task_id: str) -> TaskIngest:
    """Take the task's ingest row for this transaction (creating it on first use)."""
    bumped = uow.session.execute(
        update(TaskIngest)
        .where(TaskIngest.task_id == task_id)  # type: ignore[arg-type]
        .values(frames_seen=TaskIngest.frames_seen + 1)
    )
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        uow.session.add(TaskIngest(task_id=task_id, frames_seen=1))
        uow.session.flush()
    ingest = uow.session.get(TaskIngest, task_id, populate_existing=True)
    assert ingest is not None
    return ingest


def _check_declared_hash(ingest: TaskIngest, name: str, digest: str) -> Rejection | None:
    for entry in ingest.manifest or []:
        expected = entry.get("sha256")
        if entry.get("name") == name and expected and expected != digest:
            return Rejection(
                "hash_mismatch",
                f"sha256 {digest[:12]}… differs from the manifest's {expected[:12]}…",
            )
    return None


def _record_frame(
    uow: UnitOfWork,
    ref: FrameKey | OutsideTask,
    key: str,
    outcome: tuple[ImageInfo, str, int] | Rejection,
) -> Frame:
    if isinstance(outcome, Rejection):
        rejected = FrameRejected.create(
            FrameRejectedData(
                task_id=ref.task_id,
                frame=ref.name,
                object_key=key,
                code=outcome.code,
                reason=outcome.reason,
            ),
            source=SOURCE,
            key=(ref.task_id, ref.name),
            taskid=ref.task_id,
        )
        frame = apply_frame_rejected(uow.session, rejected)
        uow.emit(rejected, Topic.INGEST_EVENTS)
    else:
        info, digest, size = outcome
        processed = FrameProcessed.create(
            FrameProcessedData(
                task_id=ref.task_id,
                frame=ref.name,
                object_key=key,
                sha256=digest,
                width=info.width,
                height=info.height,
                size_bytes=size,
                format=info.format,
            ),
            source=SOURCE,
            key=(ref.task_id, ref.name),
            taskid=ref.task_id,
        )
        frame = apply_frame_processed(uow.session, processed)
        uow.emit(processed, Topic.INGEST_EVENTS)
    uow.session.flush()
    return frame


async def _on_manifest(ref: ManifestKey, record: S3EventRecord, deps: IngestDeps) -> None:
    with Session(deps.transactions.engine) as session:
        if session.get(Task, ref.task_id) is None:
            log.warning("ignoring manifest of unknown task %s", ref.task_id)
            return
    size = record.s3.object.size or 0
    error: str | None = None
    entries = []
    if size > deps.max_manifest_bytes:
        error = f"manifest.json is {size:,} bytes, over the limit of {deps.max_manifest_bytes:,}"
    else:
        raw = await asyncio.to_thread(deps.store.get_bytes, record.object_key)
        try:
            entries = parse_manifest(raw)
        except ManifestError as manifest_error:
            error = str(manifest_error)
    with deps.transactions.unit_of_work(CONSUMER, _message_id(record)) as uow:
        if uow.already_done:
            return
        ingest = _lock_task(uow, ref.task_id)
        if ingest.data_ready_at is not None:
            log.warning("task %s: manifest changed after its data was ready; ignored", ref.task_id)
            return
        if error is not None:
            log.warning("task %s: %s", ref.task_id, error)
            ingest.manifest_error = error
            uow.session.add(ingest)
            return
        ingest.manifest = [{"name": e.name, "sha256": e.sha256} for e in entries]
        ingest.manifest_error = None
        uow.session.add(ingest)
        _reject_mismatched_hashes(uow, ingest)
        _maybe_data_ready(uow, ingest)


def _reject_mismatched_hashes(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Frames processed before the manifest arrived are checked against its hashes now."""
    frames = {
        frame.name: frame
        for frame in uow.session.exec(select(Frame).where(Frame.task_id == ingest.task_id))
    }
    for entry in ingest.manifest or []:
        frame = frames.get(entry["name"] or "")
        if frame is None or frame.status != "processed" or frame.sha256 is None:
            continue
        rejection = _check_declared_hash(ingest, frame.name, frame.sha256)
        if rejection is None:
            continue
        rejected = FrameRejected.create(
            FrameRejectedData(
                task_id=frame.task_id,
                frame=frame.name,
                object_key=frame.object_key,
                code=rejection.code,
                reason=rejection.reason,
            ),
            source=SOURCE,
            key=(frame.task_id, frame.name),
            taskid=frame.task_id,
        )
        apply_frame_rejected(uow.session, rejected)
        uow.emit(rejected, Topic.INGEST_EVENTS)


def _maybe_data_ready(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Emit ``task.data-ready`` once, when every manifest entry has an outcome."""
    if ingest.manifest is None or ingest.data_ready_at is not None:
        return
    uow.session.flush()
    recorded = uow.session.exec(
        select(func.count()).select_from(Frame).where(Frame.task_id == ingest.task_id)
    ).one()
    if recorded < len(ingest.manifest):  # cheap on the primary key: most frames stop here
        return
    frames = {
        frame.name: frame
        for frame in uow.session.exec(select(Frame).where(Frame.task_id == ingest.task_id))
    }
    declared = [entry["name"] or "" for entry in ingest.manifest]
    if missing_frames(declared, set(frames)):
        return
    ingest.data_ready_at = datetime.now(UTC)
    uow.session.add(ingest)
    uow.emit(
        TaskDataReady.create(
            TaskDataReadyData(
                task_id=ingest.task_id,
                frames=[name for name in declared if frames[name].status == "processed"],
                rejected=[name for name in declared if frames[name].status == "rejected"],
            ),
            source=SOURCE,
            key=(ingest.task_id,),
            taskid=ingest.task_id,
        ),
        Topic.INGEST_EVENTS,
    )
