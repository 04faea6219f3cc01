"""What a task's manifest declares, checked against what arrived, and when the data is all in.

A manifest (``tasks/<id>/manifest.json``) names the task's frames, some with a sha256. A frame
whose bytes differ from the hash declared for it is rejected, whichever of the two came first;
once every declared frame has an outcome, ``task.data-ready`` is recorded, once, after the
``task.frames-listed`` parts that list the processed frames. Both are decided on the task's
``TaskIngest`` row, locked for the transaction (:func:`lock_task`), so concurrent batches and
replicas serialise per task.
"""

from __future__ import annotations

from sqlalchemy import func, update
from sqlmodel import select

from ingest import IDENTITY
from ingest.domain import Rejection, missing_frames
from ingest.frame_events import frame_rejected
from ingest.models import Frame, TaskIngest
from labelloop.messaging.outbox import UnitOfWork
from schemas.envelope import utcnow
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    TaskDataReady,
    TaskDataReadyData,
    TaskFramesListed,
    TaskFramesListedData,
)


def lock_task(uow: UnitOfWork, task_id: str, *, seen: int = 1) -> TaskIngest:
    """Take the task's ingest row for this transaction (creating it on first use), counting
    ``seen`` more objects (the reconciler watches that count move)."""
    bumped = uow.session.execute(
        update(TaskIngest)
        .where(TaskIngest.task_id == task_id)  # type: ignore[arg-type]
        .values(frames_seen=TaskIngest.frames_seen + seen)
    )
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        uow.session.add(TaskIngest(task_id=task_id, frames_seen=seen))
        uow.session.flush()
    ingest = uow.session.get(TaskIngest, task_id, populate_existing=True)
    assert ingest is not None
    return ingest


def declared_hashes(ingest: TaskIngest) -> dict[str, str]:
    """The manifest's sha256 by frame name (entries that declare one): looked up per frame,
    so a big task's manifest is never scanned once per frame."""
    declared = {}
    for entry in ingest.manifest or []:
        name, digest = entry.get("name"), entry.get("sha256")
        if name and digest:
            declared[name] = digest
    return declared


def check_declared_hash(declared: dict[str, str], name: str, digest: str) -> Rejection | None:
    """Why frame ``name`` is refused when the manifest declares another sha256; else None."""
    expected = declared.get(name)
    if expected and expected != digest:
        return Rejection(
            "hash_mismatch", f"sha256 {digest[:12]}… differs from the manifest's {expected[:12]}…"
        )
    return None


def reject_mismatched_hashes(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Frames processed before the manifest arrived are checked against its hashes now."""
    frames = {
        frame.name: frame
        for frame in uow.session.exec(select(Frame).where(Frame.task_id == ingest.task_id))
    }
    declared = declared_hashes(ingest)
    for entry in ingest.manifest or []:
        frame = frames.get(entry["name"] or "")
        if frame is None or frame.status != "processed" or frame.sha256 is None:
            continue
        rejection = check_declared_hash(declared, frame.name, frame.sha256)
        if rejection is None:
            continue
        rejected = frame_rejected(frame.task_id, frame.name, frame.object_key, rejection)
        uow.record(rejected)


def maybe_data_ready(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Emit ``task.data-ready`` once, when every manifest entry has an outcome, after the
    ``task.frames-listed`` parts that list its processed frames."""
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
    ingest.data_ready_at = utcnow()
    uow.session.add(ingest)
    processed = [name for name in declared if frames[name].status == "processed"]
    uow.record_all(
        data_ready_events(ingest.task_id, processed, rejected=len(declared) - len(processed))
    )


def data_ready_events(
    task_id: str, processed: list[str], *, rejected: int
) -> list[TaskFramesListed | TaskDataReady]:
    """``task.frames-listed`` parts of ``processed`` (kept in order), then ``task.data-ready``."""
    parts = [
        processed[start : start + MAX_FRAMES_PER_EVENT]
        for start in range(0, len(processed), MAX_FRAMES_PER_EVENT)
    ]
    listing: list[TaskFramesListed | TaskDataReady] = [
        TaskFramesListed.create(
            TaskFramesListedData(task_id=task_id, part=index, parts=len(parts), frames=names),
            source=IDENTITY.source,
            key=(task_id, index),
            taskid=task_id,
        )
        for index, names in enumerate(parts)
    ]
    ready = TaskDataReady.create(
        TaskDataReadyData(
            task_id=task_id,
            frame_count=len(processed),
            rejected_count=rejected,
            parts=len(parts),
        ),
        source=IDENTITY.source,
        key=(task_id,),
        taskid=task_id,
    )
    return [*listing, ready]
