"""Ingest's memory does not grow with the task: the batch that completes a 100,000-frame task
(its manifest in the database, every other frame recorded, all 200 listing parts to announce)
takes what a 10,000-frame task's does. (Measured: 1.8 MiB traced at both sizes; before the
manifest's entries were rows, the completion counted by the database and the listing flushed
as it is read, 20.8 and 208.7 MiB.)"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

from sqlmodel import Session, col, select

from ingest.handlers import IngestDeps, handle_records
from ingest.models import Frame
from ingest.projections import PROJECTION
from ingest.reconciler import listed_record
from labelloop.bulk import insert_rows
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.tasks import Task
from schemas.envelope import utcnow
from schemas.events import TaskDataReady, TaskFramesListed
from tests.unit.test_ingest_reconciler import MemoryStore, jpeg, listed

LAST = 100
"""Frames of the batch that completes the task."""


def _last_batch_peak(tmp_path: Path, frames: int) -> tuple[int, list[OutboxMessage]]:
    """Peak bytes traced while ingest takes a task's manifest and then its last batch."""
    engine = get_engine(f"sqlite:///{tmp_path}/{frames}.db")
    create_tables(engine)
    task_id = f"t{frames}"
    names = [f"f{index:06d}.jpg" for index in range(frames)]
    now = utcnow()
    with Session(engine) as session:
        session.add(Task(id=task_id, name="t", labels=["car"], created_by="test"))
        insert_rows(
            session,
            Frame,
            [
                {
                    "task_id": task_id,
                    "name": name,
                    "object_key": f"tasks/{task_id}/data/{name}",
                    "status": "processed",
                    "sha256": "0" * 64,
                    "processed_at": now,
                }
                for name in names[:-LAST]
            ],
        )
        session.commit()
    store = MemoryStore()
    manifest_key = f"tasks/{task_id}/manifest.json"
    store.objects[manifest_key] = json.dumps({"files": names}).encode()
    image = jpeg()
    for name in names[-LAST:]:
        store.objects[f"tasks/{task_id}/data/{name}"] = image
    deps = IngestDeps(
        store=store,  # type: ignore[arg-type]
        transactions=Transactions(engine, projection=PROJECTION),
        max_frame_bytes=1_000_000,
        max_frame_pixels=1_000_000,
        max_manifest_bytes=64 * 1024 * 1024,
    )
    manifest = listed_record(listed(manifest_key, len(store.objects[manifest_key])), store.bucket)
    asyncio.run(handle_records([manifest], deps))
    last = [
        listed_record(listed(f"tasks/{task_id}/data/{name}", len(image)), store.bucket)
        for name in names[-LAST:]
    ]
    tracemalloc.start()
    try:
        asyncio.run(handle_records(last, deps))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    with Session(engine) as session:
        recorded = list(session.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq))))
    engine.dispose()
    return peak, recorded


def test_the_batch_that_completes_a_big_task_takes_what_a_small_one_takes(
    tmp_path: Path,
) -> None:
    small, _ = _last_batch_peak(tmp_path, 10_000)
    big, recorded = _last_batch_peak(tmp_path, 100_000)
    types = [message.event_type for message in recorded]
    assert types.count(TaskDataReady.event_type()) == 1
    listings = [m for m in recorded if m.event_type == TaskFramesListed.event_type()]
    assert len(listings) == 100_000 // 500
    listed_frames = [
        name
        for message in listings
        for name in TaskFramesListed.model_validate_json(message.payload).data.frames
    ]
    assert listed_frames == [f"f{index:06d}.jpg" for index in range(100_000)]
    print(f"peak: {small / 2**20:.1f} MiB at 10,000 frames, {big / 2**20:.1f} MiB at 100,000")
    assert big < 1.5 * small, (small, big)
