"""ingest takes a poll's notifications as one batch: frames of several tasks, a re-upload and
the manifest together are each recorded once, a bad frame is refused with its reason without
failing its neighbours, and the same batch delivered again changes nothing (SQLite; the store
is the in-memory stand-in of the reconciler's tests)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlmodel import Session, select

from ingest.handlers import IngestDeps, handle_records
from ingest.models import Frame, TaskIngest
from ingest.reconciler import listed_record
from labelloop.messaging.outbox import OutboxMessage
from labelloop.tasks import Task
from tests.unit.test_ingest_reconciler import TASK, MemoryStore, deps, jpeg, listed

__all__ = ["deps"]  # the fixture, shared with the reconciler's tests

OTHER = "t-other"


async def test_one_batch_of_two_tasks_records_each_frame_once_and_redelivery_changes_nothing(
    deps: IngestDeps,
) -> None:
    store = deps.store
    assert isinstance(store, MemoryStore)
    store.objects[f"tasks/{OTHER}/data/g0.jpg"] = jpeg()
    store.objects[f"tasks/{OTHER}/data/broken.jpg"] = jpeg()[:40]
    store.objects["tasks/no-such-task/data/x.jpg"] = jpeg()
    engine = deps.transactions.engine
    with Session(engine) as session:
        session.add(Task(id=OTHER, name="o", labels=["car"], created_by="test"))
        session.commit()
    keys = [
        f"tasks/{TASK}/data/f0.jpg",
        f"tasks/{OTHER}/data/g0.jpg",
        f"tasks/{TASK}/manifest.json",  # before two of its frames: order within a batch is free
        f"tasks/{TASK}/data/f1.jpg",
        f"tasks/{TASK}/data/f0.jpg",  # the same object notified twice in one poll
        f"tasks/{OTHER}/data/broken.jpg",
        "tasks/no-such-task/data/x.jpg",
        f"tasks/{TASK}/data/f2.jpg",
    ]
    batch = [listed_record(listed(key, len(store.objects[key])), store.bucket) for key in keys]
    await handle_records(batch, deps)
    with Session(engine) as session:
        frames = {(f.task_id, f.name): f for f in session.exec(select(Frame))}
        assert set(frames) == {
            (TASK, "f0.jpg"),
            (TASK, "f1.jpg"),
            (TASK, "f2.jpg"),
            (OTHER, "g0.jpg"),
            (OTHER, "broken.jpg"),
        }
        broken = frames[(OTHER, "broken.jpg")]
        assert broken.status == "rejected" and broken.code == "truncated", broken.reason
        assert frames[(OTHER, "g0.jpg")].status == "processed"
        ingest = session.get(TaskIngest, TASK)
        assert ingest is not None and ingest.data_ready_at is not None
        first = Counter(row.event_type for row in session.exec(select(OutboxMessage)))
    assert first == {
        "io.labelloop.frame.processed.v1": 4,
        "io.labelloop.frame.rejected.v1": 1,
        "io.labelloop.task.frames-listed.v1": 1,
        "io.labelloop.task.data-ready.v1": 1,
    }
    await handle_records(batch, deps)  # redelivered after a crash before the offset commit
    with Session(engine) as session:
        again = Counter(row.event_type for row in session.exec(select(OutboxMessage)))
        assert len(session.exec(select(Frame)).all()) == 5
    assert again == first


@pytest.mark.parametrize("manifest_first", [True, False])
async def test_a_frame_whose_hash_differs_from_the_manifest_is_rejected_in_either_order(
    deps: IngestDeps, manifest_first: bool
) -> None:
    """Manifest first: each batch's frames are checked against their own entries. Manifest
    last: the frames already processed are checked page by page. Either way the listing that
    completes the task leaves the refused frame out."""
    import hashlib
    import json

    from schemas.events import TaskFramesListed

    store = deps.store
    assert isinstance(store, MemoryStore)
    good = hashlib.sha256(store.objects[f"tasks/{TASK}/data/f0.jpg"]).hexdigest()
    manifest = {
        "files": [
            {"name": "f0.jpg", "sha256": good},
            {"name": "f1.jpg", "sha256": "0" * 64},
            "f2.jpg",
        ]
    }
    manifest_key = f"tasks/{TASK}/manifest.json"
    store.objects[manifest_key] = json.dumps(manifest).encode()
    frames = [f"tasks/{TASK}/data/f{index}.jpg" for index in range(3)]
    keys = [manifest_key, *frames] if manifest_first else [*frames, manifest_key]
    for key in keys:  # one at a time: the manifest's order against the frames is the point
        record = listed_record(listed(key, len(store.objects[key])), store.bucket)
        await handle_records([record], deps)
    engine = deps.transactions.engine
    with Session(engine) as session:
        status = {f.name: (f.status, f.code) for f in session.exec(select(Frame))}
        listings = session.exec(
            select(OutboxMessage).where(OutboxMessage.event_type == TaskFramesListed.event_type())
        ).all()
    assert status == {
        "f0.jpg": ("processed", None),
        "f1.jpg": ("rejected", "hash_mismatch"),
        "f2.jpg": ("processed", None),
    }
    [listing] = listings
    assert TaskFramesListed.model_validate_json(listing.payload).data.frames == ["f0.jpg", "f2.jpg"]
