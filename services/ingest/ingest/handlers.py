"""ingest's handlers: fetch and validate each new frame, record manifests (checked against
the frames by :mod:`ingest.manifest`), and record their outcomes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from ingest import IDENTITY
from ingest.domain import (
    FrameKey,
    ImageInfo,
    ManifestError,
    ManifestKey,
    OutsideTask,
    Rejection,
    inspect_image,
    parse_key,
    parse_manifest,
)
from ingest.frame_events import frame_processed, frame_rejected
from ingest.manifest import (
    check_declared_hash,
    declared_hashes,
    lock_task,
    maybe_data_ready,
    reject_mismatched_hashes,
    replace_manifest,
)
from ingest.models import Frame
from labelloop.messaging.outbox import Transactions
from labelloop.metrics import FRAMES
from labelloop.storage import ObjectChanged, ObjectStore, ObjectTooLarge
from labelloop.tasks import Task
from schemas.events import FrameProcessed, FrameRejected
from schemas.s3 import S3EventNotification, S3EventRecord

log = logging.getLogger(__name__)

FrameItem = tuple[FrameKey | OutsideTask, S3EventRecord]
"""A created object under a task's ``data/`` (or outside it: refused with a reason)."""
Outcome = tuple[ImageInfo, str, int] | Rejection
"""What inspecting a frame found: its image, sha256 and size, or why it is refused."""


@dataclass(frozen=True)
class IngestDeps:
    store: ObjectStore
    transactions: Transactions
    max_frame_bytes: int
    max_frame_pixels: int
    max_manifest_bytes: int = 10 * 1024 * 1024
    fetch_concurrency: int = 32
    """Frames fetched or decoded at once."""
    fetch_budget_bytes: int = 256 * 1024 * 1024
    """What the frames in flight may hold together (their announced sizes)."""
    decode_pool: Executor = field(default_factory=lambda: ThreadPoolExecutor(2, "ingest-decode"))
    """Decodes and hashes fetched frames off the event loop (Pillow and hashlib release the
    GIL, so one thread a core)."""
    raw_event_keys: bool = False
    """The store sends object keys unencoded in its records (versitygw), not URL-encoded."""


async def handle_storage_events(notifications: list[S3EventNotification], deps: IngestDeps) -> None:
    """One poll's object-store notifications: each created object under ``tasks/`` is a frame or
    a manifest."""
    records = [record for notification in notifications for record in notification.records]
    await handle_records(
        [r.with_raw_key() for r in records] if deps.raw_event_keys else records, deps
    )


async def handle_records(records: list[S3EventRecord], deps: IngestDeps) -> None:
    """Created objects, notified or listed by the reconciler, each recorded once by key.

    Taken in their order: the frames up to a manifest are fetched side by side and recorded
    (each task's in one transaction per chunk), then that manifest, which checks the frames'
    hashes whichever came first. So a task whose manifest comes early in a busy batch is
    complete without waiting for the frames of the tasks behind it.
    """
    frames: list[FrameItem] = []
    for record in records:
        if not record.is_created or record.bucket != deps.store.bucket:
            continue
        ref = parse_key(record.object_key)
        if isinstance(ref, ManifestKey):
            if frames:
                await _on_frames(frames, deps)
                frames = []
            await asyncio.to_thread(_on_manifest, ref, record, deps)
        elif ref is not None:
            frames.append((ref, record))
    if frames:
        await _on_frames(frames, deps)


def _message_id(record: S3EventRecord) -> str:
    """Key and content: a notification and the listing of the same object are one message."""
    obj = record.s3.object
    version = (obj.etag or "").strip('"') or obj.sequencer
    return f"{record.object_key}@{version}"


async def _on_frames(items: list[FrameItem], deps: IngestDeps) -> None:
    """Look up, then fetch (on the event loop) and decode (on the pool) side by side, and
    record as they come: each chunk's frames are recorded while the next chunk is fetched.

    At most ``deps.fetch_concurrency`` frames are in flight, holding at most
    ``deps.fetch_budget_bytes`` between them (a frame larger than that goes alone).
    """
    new = await asyncio.to_thread(_new_frames, items, deps)
    budget = ByteBudget(deps.fetch_budget_bytes)
    limit = asyncio.Semaphore(deps.fetch_concurrency)

    async def inspect(item: FrameItem) -> Outcome:
        size = item[1].s3.object.size or 0
        async with limit, budget.hold(min(size, deps.max_frame_bytes)):
            return await _inspect_object(item[0], item[1], deps)

    recording: asyncio.Future[None] | None = None
    chunk = deps.fetch_concurrency * 4
    try:
        for start in range(0, len(new), chunk):
            part = new[start : start + chunk]
            outcomes = await asyncio.gather(*(inspect(item) for item in part))
            if recording is not None:
                await recording  # one task's chunks are recorded in their order
            recording = asyncio.ensure_future(
                asyncio.to_thread(_record_chunk, list(zip(part, outcomes, strict=True)), deps)
            )
    finally:
        if recording is not None:  # done before the batch is retried or committed
            await recording


class ByteBudget:
    """Bytes that reads in flight may hold together; a read larger than the whole budget
    waits until it is alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            async with self._changed:
                self.held -= size
                self._changed.notify_all()


def _record_chunk(inspected: list[tuple[FrameItem, Outcome]], deps: IngestDeps) -> None:
    by_task: dict[str, list[tuple[FrameKey | OutsideTask, S3EventRecord, Outcome]]] = {}
    for (ref, record), outcome in inspected:
        by_task.setdefault(ref.task_id, []).append((ref, record, outcome))
    for task_id, frames in by_task.items():
        _record_frames(task_id, frames, deps)


def _new_frames(items: list[FrameItem], deps: IngestDeps) -> list[FrameItem]:
    """The items worth fetching: of a known task, not recorded yet, the first of each name."""
    task_ids = {ref.task_id for ref, _ in items}
    with Session(deps.transactions.engine) as session:
        known = set(session.exec(select(Task.id).where(col(Task.id).in_(task_ids))))
        recorded = set(
            session.exec(
                select(Frame.task_id, Frame.name).where(
                    col(Frame.task_id).in_(task_ids),
                    col(Frame.name).in_({ref.name for ref, _ in items}),
                )
            )
        )
    new: list[FrameItem] = []
    for ref, record in items:
        if ref.task_id not in known:
            log.warning("ignoring %s: no task %s", record.object_key, ref.task_id)
        elif (ref.task_id, ref.name) not in recorded:  # else a redelivery, or a re-upload
            recorded.add((ref.task_id, ref.name))  # the first upload wins
            new.append((ref, record))
    return new


def _record_frames(
    task_id: str,
    inspected: list[tuple[FrameKey | OutsideTask, S3EventRecord, Outcome]],
    deps: IngestDeps,
) -> None:
    """One task's frames of a batch: their outcomes, events and data-ready, in one transaction."""
    message_ids = [_message_id(record) for _, record, _ in inspected]
    with deps.transactions.unit_of_work(IDENTITY.consumer, message_ids) as uow:
        todo = [
            item
            for item, message_id in zip(inspected, message_ids, strict=True)
            if message_id not in uow.done
        ]
        if not todo:
            return
        ingest = lock_task(uow, task_id, seen=len(todo))
        with uow.session.no_autoflush:  # one flush for the batch, not one per statement
            recorded = set(
                uow.session.exec(
                    select(Frame.name).where(
                        Frame.task_id == task_id, col(Frame.name).in_([r.name for r, _, _ in todo])
                    )
                )
            )  # since they were looked up: by the reconciler, or another replica
            events: list[FrameProcessed | FrameRejected] = []
            declared = declared_hashes(uow, ingest, [ref.name for ref, _, _ in todo])
            for ref, record, inspection in todo:
                if ref.name in recorded:
                    continue
                outcome = inspection
                if isinstance(inspection, tuple):
                    outcome = check_declared_hash(declared, ref.name, inspection[1]) or inspection
                events.append(_frame_event(ref, record.object_key, outcome))
            uow.record_all(events)
        statuses = ["processed" if isinstance(e, FrameProcessed) else "rejected" for e in events]
        for status in statuses:
            FRAMES.labels(status).inc()
        if statuses:
            log.info(
                "task %s: %d frames processed, %d rejected",
                task_id,
                statuses.count("processed"),
                statuses.count("rejected"),
            )
        maybe_data_ready(uow, ingest)


async def _inspect_object(
    ref: FrameKey | OutsideTask, record: S3EventRecord, deps: IngestDeps
) -> Outcome:
    if isinstance(ref, OutsideTask):
        return Rejection("outside_task", ref.reason)
    declared_size = record.s3.object.size
    if declared_size is not None and declared_size > deps.max_frame_bytes:
        return Rejection(
            "too_large", f"{declared_size:,} bytes is over the limit of {deps.max_frame_bytes:,}"
        )
    if declared_size == 0:
        return Rejection("empty", "the file is empty (0 bytes)")
    try:
        data = await deps.store.fetch_bytes(
            record.object_key, max_bytes=deps.max_frame_bytes, etag=record.s3.object.etag
        )
    except ObjectTooLarge:
        return Rejection(
            "too_large", f"the object is over the limit of {deps.max_frame_bytes:,} bytes"
        )
    except ObjectChanged:
        return Rejection(
            "changed",
            "the object was overwritten after its upload was announced; frames are immutable: "
            "upload a changed frame under a new name",
        )
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(deps.decode_pool, _inspect_bytes, data, deps.max_frame_pixels)


def _inspect_bytes(data: bytes, max_pixels: int) -> tuple[ImageInfo, str, int] | Rejection:
    result = inspect_image(data, max_pixels=max_pixels)
    if isinstance(result, Rejection):
        return result
    return result, hashlib.sha256(data).hexdigest(), len(data)


def _frame_event(
    ref: FrameKey | OutsideTask, key: str, outcome: Outcome
) -> FrameProcessed | FrameRejected:
    if isinstance(outcome, Rejection):
        return frame_rejected(ref.task_id, ref.name, key, outcome)
    info, digest, size = outcome
    return frame_processed(ref.task_id, ref.name, key, info, digest, size)


def _on_manifest(ref: ManifestKey, record: S3EventRecord, deps: IngestDeps) -> None:
    with Session(deps.transactions.engine) as session:
        if session.get(Task, ref.task_id) is None:
            log.warning("ignoring manifest of unknown task %s", ref.task_id)
            return
    size = record.s3.object.size or 0
    error: str | None = None
    entries = []
    too_large = f"manifest.json is over the limit of {deps.max_manifest_bytes:,} bytes"
    if size > deps.max_manifest_bytes:
        error = too_large
    else:
        try:  # its latest version: a manifest may be rewritten until the task's data is ready
            entries = parse_manifest(
                deps.store.get_bytes(record.object_key, max_bytes=deps.max_manifest_bytes)
            )
        except ObjectTooLarge:
            error = too_large
        except ManifestError as manifest_error:
            error = str(manifest_error)
    with deps.transactions.unit_of_work(IDENTITY.consumer, _message_id(record)) as uow:
        if uow.already_done:
            return
        ingest = lock_task(uow, ref.task_id)
        if ingest.data_ready_at is not None:
            log.warning("task %s: manifest changed after its data was ready; ignored", ref.task_id)
            return
        if error is not None:
            log.warning("task %s: %s", ref.task_id, error)
            ingest.manifest_error = error
            uow.session.add(ingest)
            return
        replace_manifest(uow, ingest, entries)
        reject_mismatched_hashes(uow, ingest)
        maybe_data_ready(uow, ingest)
