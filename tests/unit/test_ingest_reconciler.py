"""ingest's reconciler: when it lists, what it feeds, and that a pass recovers a task whose
notifications were all lost (SQLite; the object store is an in-memory stand-in here, the real
one is in tests/integration/test_lost_notifications.py)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import Session, select

from ingest.domain import parse_key
from ingest.handlers import IngestDeps
from ingest.models import Frame, TaskIngest
from ingest.projections import PROJECTION
from ingest.reconciler import Backoff, Reconciler, Watch, after_listing, listed_record, observe
from ingest.reconciler import unseen as unseen_objects
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.storage import ListedObject
from labelloop.tasks import Task

POLICY = Backoff(quiet_s=5, max_interval_s=40)
TASK = "t-rec"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def test_progress_restarts_the_quiet_period_and_empty_listings_back_off() -> None:
    first = observe(None, (0, False), 100.0, POLICY)
    assert (first.due, first.interval) == (105.0, 5)
    assert observe(first, (0, False), 103.0, POLICY) is first, "no progress: same schedule"
    moved = observe(first, (3, False), 104.0, POLICY)
    assert moved.due == 109.0
    waits = []
    watch = moved
    for _ in range(5):
        watch = after_listing(watch, 0, watch.due, POLICY)
        waits.append(watch.interval)
    assert waits == [10, 20, 40, 40, 40]
    assert after_listing(watch, 2, 500.0, POLICY) == Watch((3, False), 505.0, 5)


def listed(key: str, size: int = 10) -> ListedObject:
    return ListedObject(key, size, "etag-" + key[-6:], NOW)


def test_only_objects_without_an_outcome_are_fed_back() -> None:
    objects = [
        listed(f"tasks/{TASK}/data/a.jpg"),
        listed(f"tasks/{TASK}/data/b.jpg"),
        listed(f"tasks/{TASK}/data/sub/c.jpg"),
        listed(f"tasks/{TASK}/manifest.json"),
        listed(f"tasks/{TASK}/notes.txt"),
    ]
    missing = unseen_objects(objects, {"a.jpg"}, manifest=True)
    assert [item.key for item in missing] == [
        f"tasks/{TASK}/data/b.jpg",
        f"tasks/{TASK}/data/sub/c.jpg",
    ]
    assert len(unseen_objects(objects, {"a.jpg", "b.jpg", "sub/c.jpg"}, manifest=False)) == 1


def test_a_listed_record_reads_like_a_notification() -> None:
    record = listed_record(listed(f"tasks/{TASK}/data/my frame+1.jpg", 42), "labelloop")
    assert record.is_created and record.bucket == "labelloop"
    assert record.object_key == f"tasks/{TASK}/data/my frame+1.jpg"
    assert record.s3.object.size == 42
    assert parse_key(record.object_key) is not None


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class MemoryStore:
    """The calls ingest makes of the store, over a dict."""

    objects: dict[str, bytes] = field(default_factory=dict)
    bucket: str = "labelloop"

    def list_objects(self, prefix: str) -> list[ListedObject]:
        return [listed(k, len(v)) for k, v in sorted(self.objects.items()) if k.startswith(prefix)]

    def get_bytes(
        self, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        return self.objects[key]

    async def fetch_bytes(
        self, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        return self.get_bytes(key, max_bytes=max_bytes, etag=etag)


@pytest.fixture
def deps(tmp_path: Path) -> IngestDeps:
    engine = get_engine(f"sqlite:///{tmp_path}/reconcile.db")
    create_tables(engine)
    with Session(engine) as session:
        session.add(Task(id=TASK, name="t", labels=["car"], created_by="test"))
        session.commit()
    store = MemoryStore()
    names = [f"f{index}.jpg" for index in range(3)]
    for name in names:
        store.objects[f"tasks/{TASK}/data/{name}"] = jpeg()
    store.objects[f"tasks/{TASK}/manifest.json"] = b'{"files": ["f0.jpg", "f1.jpg", "f2.jpg"]}'
    return IngestDeps(
        store=store,  # type: ignore[arg-type]
        transactions=Transactions(engine, projection=PROJECTION),
        max_frame_bytes=1_000_000,
        max_frame_pixels=1_000_000,
    )


async def test_a_task_whose_notifications_were_all_lost_completes_by_listing(
    deps: IngestDeps,
) -> None:
    reconciler = Reconciler(deps, Backoff(quiet_s=0.01, max_interval_s=1))
    assert await reconciler.tick() == 0, "first sight: the quiet period starts"
    reconciler.watches = {
        k: Watch(w.progress, 0.0, w.interval) for k, w in reconciler.watches.items()
    }
    assert await reconciler.tick() == 4
    engine = deps.transactions.engine
    with Session(engine) as session:
        assert {f.name for f in session.exec(select(Frame))} == {"f0.jpg", "f1.jpg", "f2.jpg"}
        ingest = session.get(TaskIngest, TASK)
        assert ingest is not None and ingest.data_ready_at is not None
        types = [row.event_type for row in session.exec(select(OutboxMessage))]
    assert types.count("io.labelloop.task.objects-recovered.v1") == 1
    assert types.count("io.labelloop.frame.processed.v1") == 3
    assert types.count("io.labelloop.task.data-ready.v1") == 1
    assert types.index("io.labelloop.task.objects-recovered.v1") < types.index(
        "io.labelloop.frame.processed.v1"
    ), "the timeline says which frames came by listing before they arrive"
    # complete: never listed again
    assert await reconciler.tick() == 0 and reconciler.watches == {}
