"""jobgen cuts a task of any size in flat memory (issue #16), and cuts it as it always did.

The listing of a task is inserted straight into ``frame_listings`` (as ``task.frames-listed``
parts leave it), then jobgen's own ``task.data-ready`` handler runs as its subscriber calls it.
tracemalloc's peak while it cuts a 100,000-frame task must stay close to a 10,000-frame one's:
what jobgen holds at once is bounded by a job's size, not the task's.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from jobgen import IDENTITY, handlers
from jobgen import projections as jobgen
from jobgen.domain import job_id, natural_key, segment_ranges, sort_key
from jobgen.handlers import ListingIncomplete, handle_data_ready
from jobgen.models import FrameListing, Job
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, ProcessedMessage, Transactions, UnitOfWork
from labelloop.tasks import Task
from schemas.envelope import CloudEvent
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    JobCreated,
    TaskDataReady,
    TaskDataReadyData,
    TaskJobsReady,
)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/jobgen.db")
    create_tables(engine)
    return engine


def listed_task(
    engine: Engine, task_id: str, names: list[str], *, segment_size: int, overlap: int = 0
) -> TaskDataReady:
    """A task whose listing jobgen has kept (its parts in ``frame_listings``, as
    ``task.frames-listed`` leaves them), and the ``task.data-ready`` that follows it."""
    parts = [
        names[start : start + MAX_FRAMES_PER_EVENT]
        for start in range(0, len(names), MAX_FRAMES_PER_EVENT)
    ]
    with Session(engine) as session:
        session.add(
            Task(
                id=task_id,
                name=task_id,
                labels=["car"],
                segment_size=segment_size,
                overlap=overlap,
                created_by="test",
            )
        )
        if parts:
            session.execute(
                insert(FrameListing.__table__),  # type: ignore[attr-defined]
                [
                    {"task_id": task_id, "part": index, "parts": len(parts), "frames": frames}
                    for index, frames in enumerate(parts)
                ],
            )
        session.commit()
    return TaskDataReady.create(
        TaskDataReadyData(
            task_id=task_id, frame_count=len(names), rejected_count=0, parts=len(parts)
        ),
        source="/labelloop/ingest",
        key=(task_id,),
        taskid=task_id,
    )


def shuffled(count: int, seed: int) -> list[str]:
    """Frame names in a manifest's order (not the natural one jobgen sorts them into)."""
    names = [f"frame_{index:06d}.jpg" for index in range(count)]
    random.Random(seed).shuffle(names)
    return names


def cut_peak(engine: Engine, task_id: str, count: int) -> int:
    """tracemalloc's peak, in bytes, while jobgen cuts a listed task of ``count`` frames."""
    ready = listed_task(engine, task_id, shuffled(count, count), segment_size=300, overlap=30)
    transactions = Transactions(engine).bound(jobgen.PROJECTION)
    tracemalloc.start()
    try:
        handle_data_ready(ready, transactions)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(Job.task_id == task_id)).all()
        assert len(jobs) == len(range(0, count, 270))
    return peak


def test_memory_stays_flat_as_the_task_grows(engine: Engine) -> None:
    """Jobs of 300 frames (overlap 30): about 0.55 MiB at 10k frames and 0.6 at 100k. Cutting
    the whole listing at once held it all: 4.3 MiB at 10k and 44 at 100k (10x)."""
    cut_peak(engine, "t-warm", 2_000)  # compiled statements, caches, first-use imports
    small = cut_peak(engine, "t-10k", 10_000)
    large = cut_peak(engine, "t-100k", 100_000)
    print(f"peak: 10k {small / 2**20:.1f} MiB, 100k {large / 2**20:.1f} MiB")
    assert large < 1.5 * small, (small, large)


NAMES = [
    "frame10.jpg",
    "frame2.jpg",
    "Frame1.jpg",
    "frame1.jpg",  # equal natural keys: the listing's order decides, as a stable sort does
    "frame01.jpg",
    "frame",
    "frame0",
    "frame.jpg",
    "a\x00b",
    "a",
    "a\x01",
    "ab",
    "a9b",
    "a10",
    "10",
    "9a",
    "é1",
    "e1",
    "z" * 40,
    "x" + "9" * 60,
    "x" + "1" + "0" * 60,
    "snowman☃2",
    "snowman☃10",
    "\U0001f600",
    "\uffff",
]


@pytest.mark.parametrize(("segment_size", "overlap"), [(0, 0), (1, 0), (7, 3), (10, 0), (4, 2)])
def test_jobs_and_events_are_those_of_the_whole_sorted_listing(
    engine: Engine, segment_size: int, overlap: int
) -> None:
    """Same jobs (ids, frames), same events in the same order, as slicing the whole listing
    sorted at once (what jobgen did before it streamed)."""
    names = [*NAMES, *shuffled(1_150, 1)]
    random.Random(2).shuffle(names)
    task_id = f"t-{segment_size}-{overlap}"
    ready = listed_task(engine, task_id, names, segment_size=segment_size, overlap=overlap)
    transactions = Transactions(engine).bound(jobgen.PROJECTION)

    made = handle_data_ready(ready, transactions)

    ordered = sorted(names, key=natural_key)
    expected = [
        (job_id(task_id, index), start, stop, ordered[start : stop + 1])
        for index, (start, stop) in enumerate(segment_ranges(len(names), segment_size, overlap))
    ]
    assert list(made) == [job[0] for job in expected]
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(Job.task_id == task_id)).all()
        assert sorted((j.id, j.start_frame, j.stop_frame, j.frames) for j in jobs) == expected
        payloads = session.exec(
            select(OutboxMessage.payload)
            .where(OutboxMessage.key == task_id)
            .order_by(col(OutboxMessage.seq))
        ).all()
    *created, last = payloads
    events = [JobCreated.model_validate_json(payload) for payload in created]
    assert [(e.id, e.data.job_id) for e in events] == [
        (JobCreated.id_for(job[0]), job[0]) for job in expected
    ]
    assert [(e.data.start_frame, e.data.stop_frame, e.data.frames) for e in events] == [
        job[1:] for job in expected
    ]
    assert all(e.causationid == ready.id and e.source == IDENTITY.source for e in events)
    jobs_ready = TaskJobsReady.model_validate_json(last)
    assert jobs_ready.data.job_count == len(expected)

    # redelivered: nothing more, nothing twice
    assert list(handle_data_ready(ready, transactions)) == []
    with Session(engine) as session:
        again = session.exec(select(OutboxMessage.seq).where(OutboxMessage.key == task_id))
        assert len(again.all()) == len(payloads)


def test_an_incomplete_listing_cuts_nothing(engine: Engine) -> None:
    names = shuffled(1_200, 3)
    ready = listed_task(engine, "t-short", names, segment_size=100)
    with Session(engine) as session:
        listing = session.get(FrameListing, ("t-short", 1))
        assert listing is not None
        session.delete(listing)
        session.commit()
    with pytest.raises(ListingIncomplete, match="2 of 3 listing parts, 700 of 1200 frames"):
        handle_data_ready(ready, Transactions(engine).bound(jobgen.PROJECTION))
    with Session(engine) as session:
        assert session.exec(select(Job).where(Job.task_id == "t-short")).all() == []
        assert session.exec(select(OutboxMessage).where(OutboxMessage.key == "t-short")).all() == []
        assert session.get(ProcessedMessage, (IDENTITY.consumer, ready.id)) is None


def test_sort_keys_order_as_natural_keys_then_listing_order() -> None:
    """The database sorts by :func:`jobgen.domain.sort_key` bytes: the order must be Python's
    stable sort by natural key, on awkward names too (NUL, case, leading zeros, big numbers,
    non-ASCII digits and text)."""
    rng = random.Random(4)
    alphabet = ["a", "B", "b", "0", "00", "7", "10", "٣", "\x00", "\x01", "\x03", ".", "é", "☃"]
    names = [*NAMES, *("".join(rng.choices(alphabet, k=rng.randint(1, 6))) for _ in range(3_000))]
    by_key = sorted(range(len(names)), key=lambda index: sort_key(names[index], index))
    assert [names[index] for index in by_key] == sorted(names, key=natural_key)


def test_a_failure_mid_cut_leaves_nothing_and_the_redelivery_cuts_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are written out a group at a time, but in the one transaction: a failure after some
    groups rolls them all back, and the redelivery (on the same pooled connection, whose
    temporary table SQLite may have kept) cuts every job once."""
    ready = listed_task(engine, "t-crash", shuffled(5_000, 5), segment_size=100)
    transactions = Transactions(engine).bound(jobgen.PROJECTION)
    write_out = handlers.write_out
    groups: list[int] = []

    def failing(uow: UnitOfWork, events: Sequence[CloudEvent[Any]]) -> None:
        groups.append(len(events))
        if len(groups) == 3:
            raise RuntimeError("crash mid-cut")
        write_out(uow, events)

    monkeypatch.setattr(handlers, "write_out", failing)
    with pytest.raises(RuntimeError, match="crash mid-cut"):
        handle_data_ready(ready, transactions)
    with Session(engine) as session:
        assert session.exec(select(Job).where(Job.task_id == "t-crash")).all() == []
        assert session.exec(select(OutboxMessage).where(OutboxMessage.key == "t-crash")).all() == []
    monkeypatch.setattr(handlers, "write_out", write_out)

    assert len(handle_data_ready(ready, transactions)) == 50
    with Session(engine) as session:
        jobs = session.exec(select(Job).where(Job.task_id == "t-crash")).all()
        assert len(jobs) == 50
        assert sum(len(job.frames) for job in jobs) == 5_000
        rows = session.exec(select(OutboxMessage).where(OutboxMessage.key == "t-crash")).all()
        assert len(rows) == 51
