"""What a task's manifest declares, checked against what arrived, and when the data is all in.

A manifest (``tasks/<id>/manifest.json``) names the task's frames, some with a sha256; its
entries are rows of ``manifest_entries``, so each check reads only what it needs. A frame
whose bytes differ from the hash declared for it is rejected, whichever of the two came first;
once every declared frame has an outcome, ``task.data-ready`` is recorded, once, after the
``task.frames-listed`` parts that list the processed frames. Both are decided on the task's
``TaskIngest`` row, locked for the transaction (:func:`lock_task`), so concurrent batches and
replicas serialise per task.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import delete, func, update
from sqlmodel import col, select

from ingest import IDENTITY
from ingest.domain import ManifestEntry, Rejection
from ingest.frame_events import frame_rejected
from ingest.models import DeclaredFrame, Frame, TaskIngest
from labelloop.bulk import found_keys, insert_rows
from labelloop.db import in_chunks
from labelloop.messaging.outbox import UnitOfWork
from schemas.envelope import utcnow
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    TaskDataReady,
    TaskDataReadyData,
    TaskFramesListed,
    TaskFramesListedData,
)

FLUSH_PARTS = 20
"""Listing parts recorded between two flushes of the outbox (10,000 names)."""
PAGE = 500
"""Manifest entries read per query."""


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


def declared_hashes(uow: UnitOfWork, ingest: TaskIngest, names: list[str]) -> dict[str, str]:
    """The sha256 the manifest declares for each of ``names`` that has one: the batch's own
    entries, looked up by key, so a big task's manifest is never loaded for a batch (and no
    query at all before the manifest has come)."""
    if not ingest.declared:
        return {}
    found: dict[str, str] = {}
    for chunk in in_chunks(names):
        rows = uow.session.exec(
            select(DeclaredFrame.name, DeclaredFrame.sha256).where(
                DeclaredFrame.task_id == ingest.task_id,
                col(DeclaredFrame.name).in_(chunk),
                col(DeclaredFrame.sha256).is_not(None),
            )
        )
        found.update({name: digest for name, digest in rows if digest})
    return found


def check_declared_hash(declared: dict[str, str], name: str, digest: str) -> Rejection | None:
    """Why frame ``name`` is refused when the manifest declares another sha256; else None."""
    expected = declared.get(name)
    if expected and expected != digest:
        return Rejection(
            "hash_mismatch", f"sha256 {digest[:12]}… differs from the manifest's {expected[:12]}…"
        )
    return None


def replace_manifest(uow: UnitOfWork, ingest: TaskIngest, entries: list[ManifestEntry]) -> None:
    """The task's manifest is now ``entries`` (a manifest may be rewritten until the task's
    data is ready): its rows replace the previous ones."""
    uow.session.execute(delete(DeclaredFrame).where(col(DeclaredFrame.task_id) == ingest.task_id))
    insert_rows(
        uow.session,
        DeclaredFrame,
        [
            {"task_id": ingest.task_id, "name": e.name, "position": n, "sha256": e.sha256}
            for n, e in enumerate(entries)
        ],
    )
    ingest.declared = len(entries)
    ingest.manifest_error = None
    uow.session.add(ingest)


def declared_pages(uow: UnitOfWork, ingest: TaskIngest) -> Iterator[list[tuple[str, str | None]]]:
    """The manifest's (name, sha256) entries in order, :data:`PAGE` at a time, each page one
    range of positions on the index: the database never plans a join of a task's frames with
    its entries (written in this very transaction, they have no statistics yet, and a planner
    that takes them for a handful of rows would scan them once per frame)."""
    for start in range(0, ingest.declared or 0, PAGE):
        yield list(
            uow.session.exec(
                select(DeclaredFrame.name, DeclaredFrame.sha256)
                .where(
                    DeclaredFrame.task_id == ingest.task_id,
                    col(DeclaredFrame.position) >= start,
                    col(DeclaredFrame.position) < start + PAGE,
                )
                .order_by(col(DeclaredFrame.position))
            )
        )


def reject_mismatched_hashes(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Frames processed before the manifest arrived are checked against its hashes now, a
    page of entries at a time (only the entries that declare a hash are looked up)."""
    for page in declared_pages(uow, ingest):
        expected = {name: digest for name, digest in page if digest}
        if not expected:
            continue
        processed = uow.session.exec(
            select(Frame.name, Frame.object_key, Frame.sha256).where(
                Frame.task_id == ingest.task_id,
                Frame.status == "processed",
                col(Frame.name).in_(list(expected)),
            )
        ).all()
        order = {name: position for position, name in enumerate(expected)}
        for name, object_key, digest in sorted(processed, key=lambda row: order[row[0]]):
            rejection = check_declared_hash(expected, name, digest or "")
            if rejection is not None:
                uow.record(frame_rejected(ingest.task_id, name, object_key, rejection))


def maybe_data_ready(uow: UnitOfWork, ingest: TaskIngest) -> None:
    """Emit ``task.data-ready`` once, when every manifest entry has an outcome, after the
    ``task.frames-listed`` parts that list its processed frames (in the manifest's order).

    Most batches stop at a count on the primary key. The last one reads the manifest a page
    at a time, twice (are all there, how many processed; then the parts), so the memory it
    takes does not grow with the task.
    """
    if ingest.declared is None or ingest.data_ready_at is not None:
        return
    uow.session.flush()
    task_id = ingest.task_id
    recorded = uow.session.exec(
        select(func.count()).select_from(Frame).where(Frame.task_id == task_id)
    ).one()
    if recorded < ingest.declared:
        return
    processed = 0
    for page in declared_pages(uow, ingest):
        names = [name for name, _ in page]
        if len(found_keys(uow.session, Frame, "name", names, task_id=task_id)) < len(names):
            return  # a declared frame has no outcome yet (others in the task are not declared)
        processed += len(_processed(uow, task_id, names))
    ingest.data_ready_at = utcnow()
    uow.session.add(ingest)
    parts = -(-processed // MAX_FRAMES_PER_EVENT)
    listed: list[str] = []
    index = 0
    for page in declared_pages(uow, ingest):
        names = [name for name, _ in page]
        done = _processed(uow, task_id, names)
        listed.extend(name for name in names if name in done)
        while len(listed) >= MAX_FRAMES_PER_EVENT:
            index = _list_part(uow, task_id, index, parts, listed)
    if listed:
        _list_part(uow, task_id, index, parts, listed)
    uow.record(data_ready(task_id, processed, rejected=ingest.declared - processed, parts=parts))


def _list_part(uow: UnitOfWork, task_id: str, index: int, parts: int, listed: list[str]) -> int:
    """Record part ``index`` from the head of ``listed`` (taken off it); the next index."""
    uow.record(listing_part(task_id, index, parts, listed[:MAX_FRAMES_PER_EVENT]))
    del listed[:MAX_FRAMES_PER_EVENT]
    if (index + 1) % FLUSH_PARTS == 0:
        uow.flush()  # one task's key: the outbox rows go now, not all held to the commit
    return index + 1


def _processed(uow: UnitOfWork, task_id: str, names: list[str]) -> set[str]:
    return found_keys(uow.session, Frame, "name", names, task_id=task_id, status="processed")


def listing_part(task_id: str, index: int, parts: int, names: list[str]) -> TaskFramesListed:
    """Part ``index`` of ``parts`` of the task's processed frames."""
    return TaskFramesListed.create(
        TaskFramesListedData(task_id=task_id, part=index, parts=parts, frames=names),
        source=IDENTITY.source,
        key=(task_id, index),
        taskid=task_id,
    )


def data_ready(task_id: str, processed: int, *, rejected: int, parts: int) -> TaskDataReady:
    """Every declared frame has its outcome; ``parts`` listings went before."""
    return TaskDataReady.create(
        TaskDataReadyData(
            task_id=task_id, frame_count=processed, rejected_count=rejected, parts=parts
        ),
        source=IDENTITY.source,
        key=(task_id,),
        taskid=task_id,
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
        listing_part(task_id, index, len(parts), names) for index, names in enumerate(parts)
    ]
    ready = data_ready(task_id, len(processed), rejected=rejected, parts=len(parts))
    return [*listing, ready]
