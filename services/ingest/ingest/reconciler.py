"""Durability by reconciliation: objects whose notification never came are found by listing.

Notifications are the hot path: the object store sends each ObjectCreated record to
``storage.objects`` as it happens, and ingest handles it at once. Notifications can be lost,
though: MinIO without a queue dir drops what it cannot send (Kafka down, its queue full),
versitygw sends fire-and-forget, some S3 servers send none. So for every task whose data is
not complete, once nothing has arrived for it for a quiet period, ingest lists the task's
prefix and feeds each object it has not recorded through :func:`ingest.handlers.handle_records`,
the path a notification takes (idempotent by key: a frame is recorded once, whichever path
brings it first). Listings that find nothing back off; a complete task is never listed, so the
hot path stays push and costs no listing.

Several ingest replicas each reconcile; that is wasteful but safe, for the same reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, col, select

from ingest import IDENTITY
from ingest.domain import FrameKey, ManifestKey, OutsideTask, parse_key
from ingest.handlers import IngestDeps, handle_records
from ingest.models import Frame, TaskIngest
from labelloop.metrics import (
    RECONCILE_LISTINGS,
    RECONCILE_RECOVERED,
    RECONCILE_TASKS,
    RECONCILE_WATCHED,
)
from labelloop.storage import ListedObject
from labelloop.tasks import Task
from schemas.envelope import utcnow
from schemas.events import RECOVERED_PER_EVENT, ObjectsRecovered, ObjectsRecoveredData
from schemas.s3 import S3EventRecord

log = logging.getLogger(__name__)

Progress = tuple[int, bool]
"""What ingest has recorded of a task: (frames seen, manifest recorded)."""


@dataclass(frozen=True)
class Backoff:
    quiet_s: float
    max_interval_s: float


@dataclass(frozen=True)
class Watch:
    """One incomplete task: its progress when last seen, and when it is next listed."""

    progress: Progress
    due: float
    interval: float


def observe(watch: Watch | None, progress: Progress, now: float, policy: Backoff) -> Watch:
    """A task first seen, or one that made progress, is listed a quiet period from now."""
    if watch is None or watch.progress != progress:
        return Watch(progress, now + policy.quiet_s, policy.quiet_s)
    return watch


def after_listing(watch: Watch, recovered: int, now: float, policy: Backoff) -> Watch:
    """A listing that recovered objects starts over; one that found nothing doubles the wait."""
    if recovered:
        return Watch(watch.progress, now + policy.quiet_s, policy.quiet_s)
    interval = min(watch.interval * 2, policy.max_interval_s)
    return Watch(watch.progress, now + interval, interval)


def listed_record(item: ListedObject, bucket: str) -> S3EventRecord:
    """The record a notification would have carried for a listed object."""
    return S3EventRecord.model_validate(
        {
            "eventTime": item.last_modified,
            "eventName": "s3:ObjectCreated:Put",
            "eventSource": "labelloop:reconciler",
            "s3": {
                "bucket": {"name": bucket},
                "object": {"key": item.key, "size": item.size, "eTag": item.etag},
            },
        }
    ).with_raw_key()


def unseen(listed: list[ListedObject], frames: set[str], manifest: bool) -> list[ListedObject]:
    """The listed objects ingest has no outcome for yet."""

    def recorded(ref: object) -> bool:
        if isinstance(ref, ManifestKey):
            return manifest
        if isinstance(ref, FrameKey | OutsideTask):
            return ref.name in frames
        return True  # not labelloop's: nothing to ingest

    return [item for item in listed if not recorded(parse_key(item.key))]


class Reconciler:
    """Watches incomplete tasks and lists each when it has been quiet; see the module doc."""

    def __init__(
        self,
        deps: IngestDeps,
        policy: Backoff,
        *,
        tick_s: float = 1.0,
        horizon_s: float = 86_400.0,
    ) -> None:
        self.deps = deps
        self.policy = policy
        self.tick_s = tick_s
        self.horizon = timedelta(seconds=horizon_s)
        self.watches: dict[str, Watch] = {}

    async def run(self) -> None:
        """Reconcile until cancelled; a failed pass is logged and tried again next tick."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciler pass failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> int:
        """Observe every incomplete task and list those due; returns the objects recovered."""
        progress = await asyncio.to_thread(self._incomplete)
        now = time.monotonic()
        self.watches = {
            task_id: observe(self.watches.get(task_id), seen, now, self.policy)
            for task_id, seen in progress.items()
        }
        RECONCILE_WATCHED.set(len(self.watches))
        recovered = 0
        for task_id, watch in list(self.watches.items()):
            if watch.due > now:
                continue
            try:
                found = await self.reconcile(task_id)
                RECONCILE_LISTINGS.labels("recovered" if found else "nothing").inc()
            except Exception as error:  # the store or the database is away: back off, retry
                log.warning("reconciling task %s failed: %s", task_id, error)
                RECONCILE_LISTINGS.labels("failed").inc()
                found = 0
            recovered += found
            self.watches[task_id] = after_listing(watch, found, time.monotonic(), self.policy)
        return recovered

    async def reconcile(self, task_id: str) -> int:
        """List the task's prefix; ingest every object it has no outcome for, announced first."""
        listed = await asyncio.to_thread(self.deps.store.list_objects, f"tasks/{task_id}/")
        frames, manifest = await asyncio.to_thread(self._recorded, task_id)
        missing = unseen(listed, frames, manifest)
        if not missing:
            return 0
        log.warning("task %s: %d objects came without a notification", task_id, len(missing))
        for start in range(0, len(missing), RECOVERED_PER_EVENT):
            chunk = missing[start : start + RECOVERED_PER_EVENT]
            await asyncio.to_thread(self._announce, task_id, chunk, len(listed))
            bucket = self.deps.store.bucket
            await handle_records([listed_record(item, bucket) for item in chunk], self.deps)
        RECONCILE_RECOVERED.inc(len(missing))
        RECONCILE_TASKS.inc()
        return len(missing)

    def _incomplete(self) -> dict[str, Progress]:
        since = utcnow() - self.horizon
        with Session(self.deps.transactions.engine) as session:
            rows = session.exec(
                select(Task.id, TaskIngest.frames_seen, TaskIngest.declared)
                .join(TaskIngest, col(TaskIngest.task_id) == col(Task.id), isouter=True)
                .where(col(TaskIngest.data_ready_at).is_(None), col(Task.created_at) >= since)
            ).all()
        return {task_id: (seen or 0, declared is not None) for task_id, seen, declared in rows}

    def _recorded(self, task_id: str) -> tuple[set[str], bool]:
        with Session(self.deps.transactions.engine) as session:
            names = session.exec(select(Frame.name).where(Frame.task_id == task_id)).all()
            ingest = session.get(TaskIngest, task_id)
        return set(names), ingest is not None and ingest.declared is not None

    def _announce(self, task_id: str, chunk: list[ListedObject], listed: int) -> None:
        keys = [item.key for item in chunk]
        event = ObjectsRecovered.create(
            ObjectsRecoveredData(task_id=task_id, object_keys=keys, listed=listed),
            source=IDENTITY.source,
            key=(task_id, *(f"{item.key}@{item.etag}" for item in chunk)),
            taskid=task_id,
        )
        with self.deps.transactions.unit_of_work() as uow:
            uow.record(event)
