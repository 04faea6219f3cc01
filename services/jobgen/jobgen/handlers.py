"""jobgen's handlers: ``task.frames-listed`` parts kept, then ``task.data-ready`` in, jobs and
their events out, atomically."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, LargeBinary, MetaData, Table, delete
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable, DropTable
from sqlmodel import Session, col, select

from jobgen import IDENTITY
from jobgen.domain import cut_jobs, job_id, sort_key
from jobgen.models import FrameListing
from labelloop.bulk import parameter_marker
from labelloop.messaging.outbox import Transactions, UnitOfWork
from labelloop.tasks import Task
from schemas.envelope import CloudEvent
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    JobCreated,
    JobCreatedData,
    TaskDataReady,
    TaskFramesListed,
    TaskJobsReady,
    TaskJobsReadyData,
)

log = logging.getLogger(__name__)

WRITE_FRAMES = 4 * MAX_FRAMES_PER_EVENT
"""Frames the jobs cut but not yet written may hold: then they are written out."""
WRITE_JOBS = 256
"""Jobs cut but not yet written, at most (tiny jobs reach it before :data:`WRITE_FRAMES`)."""
PAGE = MAX_FRAMES_PER_EVENT
"""Sorted frame names read per query."""
_SORTED = Table(
    "jobgen_sorted_frames",
    MetaData(),  # its own: no migration or create_tables makes it
    Column("sort_key", LargeBinary, primary_key=True),
    Column("name", LargeBinary, nullable=False),  # UTF-8: PostgreSQL text holds no NUL
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
    sqlite_with_rowid=False,  # rows stored in key order: pages are read in sequence
)
"""The listing of the task being cut, keyed by natural order: per connection, per transaction."""


class ListingIncomplete(LookupError):
    """``task.data-ready`` came without all the parts that precede it: never retried."""


def handle_frames_listed(events: Sequence[TaskFramesListed], transactions: Transactions) -> None:
    """Keep listing parts (a batch in one transaction) for the ``task.data-ready`` after them."""
    transactions.project(IDENTITY.consumer, events)


def handle_data_ready(
    event: TaskDataReady, transactions: Transactions, listed: Sequence[TaskFramesListed] = ()
) -> list[str]:
    """Cut the task into jobs; one ``job.created`` each, then ``task.jobs-ready``.

    Jobs, events and the processed mark commit together (with the listing parts that came in
    the same batch), and job ids are deterministic, so a crash at any point followed by
    redelivery yields exactly the same jobs once. Memory does not grow with the task: the
    database sorts the listing (:func:`sorted_listing`) and the jobs are cut and written a few
    at a time, in order, within that one transaction.
    """
    task_id = event.data.task_id
    handled = [*(part.id for part in listed), event.id]
    with transactions.unit_of_work(IDENTITY.consumer, handled) as uow:
        uow.apply_all([part for part in listed if part.id not in uow.done])
        if event.id in uow.done:
            return []
        task = uow.session.get(Task, task_id)
        if task is None:
            raise LookupError(f"task.data-ready for unknown task {task_id}")
        with sorted_listing(uow.session, event) as frames:
            jobs = cut_and_record(uow, event, frames, task.segment_size, task.overlap)
        ready = TaskJobsReady.create(
            TaskJobsReadyData(task_id=task_id, job_count=len(jobs)),
            source=IDENTITY.source,
            key=(task_id,),
            taskid=task_id,
            cause=event,
        )
        uow.record(ready)
    log.info("task %s: %d jobs", task_id, len(jobs))
    return jobs


def cut_and_record(
    uow: UnitOfWork, event: TaskDataReady, frames: Iterator[str], segment_size: int, overlap: int
) -> list[str]:
    """Record a ``job.created`` for each job cut from ``frames`` (in natural order), in order,
    a group at a time: each group's rows are written out before the next is cut, so what is
    held is a group's events and jobs, whatever the task's size. Returns the job ids."""
    task_id = event.data.task_id
    made: list[str] = []
    group: list[JobCreated] = []
    held = 0
    for plan in cut_jobs(frames, event.data.frame_count, segment_size, overlap):
        new_job = job_id(task_id, plan.index)
        group.append(
            JobCreated.create(
                JobCreatedData(
                    job_id=new_job,
                    task_id=task_id,
                    start_frame=plan.start_frame,
                    stop_frame=plan.stop_frame,
                    frames=list(plan.frames),
                ),
                source=IDENTITY.source,
                key=(new_job,),
                taskid=task_id,
                subject=new_job,
                cause=event,
            )
        )
        made.append(new_job)
        held += len(plan.frames)
        if held >= WRITE_FRAMES or len(group) >= WRITE_JOBS:
            write_out(uow, group)
            group, held = [], 0
    write_out(uow, group)
    return made


def write_out(uow: UnitOfWork, events: Sequence[CloudEvent[Any]]) -> None:
    """Record ``events`` and write them, with the rows they make, to the transaction now
    rather than at its commit, so neither the ORM session nor the unit of work keeps them.

    The unit of work forgets the events it has flushed: they are in the outbox table now,
    where :meth:`UnitOfWork.record_all` also looks for an event recorded before, so an event
    is still recorded once.
    """
    if not events:
        return
    uow.record_all(events)
    uow.session.flush()
    uow.flush()


@contextmanager
def sorted_listing(session: Session, event: TaskDataReady) -> Iterator[Iterator[str]]:
    """The task's processed frames in natural order, read from the database a page at a time.

    The listing parts are copied, one at a time, into a temporary table keyed by
    :func:`~jobgen.domain.sort_key` (bytes that sort as the natural key does, ties in listing
    order), so the database keeps them in that order, on its disk if need be: jobgen holds a
    part or a page, never the listing. Raises :class:`ListingIncomplete` before any job is cut
    when parts or frames are missing. The table lives in this transaction only (a rollback
    takes it away on PostgreSQL; on SQLite it may stay on the connection, emptied when used).
    """
    connection = session.connection()
    connection.execute(CreateTable(_SORTED, if_not_exists=True))
    connection.execute(delete(_SORTED))
    statements = _Statements.of(connection.dialect)
    parts = frames = 0
    for names in listing_parts(session, event.data.task_id):
        rows = [
            (sort_key(name, frames + offset), name.encode("utf-8", "surrogatepass"))
            for offset, name in enumerate(names)
        ]
        connection.exec_driver_sql(statements.add, rows)
        parts += 1
        frames += len(names)
    if parts != event.data.parts or frames != event.data.frame_count:
        raise ListingIncomplete(
            f"task {event.data.task_id}: {parts} of {event.data.parts} listing parts, "
            f"{frames} of {event.data.frame_count} frames"
        )
    yield _pages(connection, statements.page)
    connection.execute(DropTable(_SORTED))


def listing_parts(session: Session, task_id: str) -> Iterator[list[str]]:
    """The names of each of the task's listing parts, in part order, one part loaded at a time."""
    last = -1
    while True:
        row = session.exec(
            select(FrameListing.part, FrameListing.frames)
            .where(FrameListing.task_id == task_id, col(FrameListing.part) > last)
            .order_by(col(FrameListing.part))
            .limit(1)
        ).first()
        if row is None:
            return
        last, names = row
        yield list(names)


def _pages(connection: Connection, page: str) -> Iterator[str]:
    """The sorted table's names in key order, :data:`PAGE` rows a query (each query starts
    after the last key read, so no statement stays open while the jobs are written)."""
    last = b""
    while True:
        rows = connection.exec_driver_sql(page, (last,)).all()
        for key, name in rows:
            yield bytes(name).decode("utf-8", "surrogatepass")
            last = key
        if len(rows) < PAGE:
            return


@dataclass(frozen=True)
class _Statements:
    """The temporary table's two statements, for the driver itself: thousands of rows go
    through them per task, and SQLAlchemy's per-row work would cost more than the database's."""

    add: str
    page: str

    @classmethod
    def of(cls, dialect: Dialect) -> _Statements:
        marker = parameter_marker(dialect)
        table = dialect.identifier_preparer.format_table(_SORTED)
        after = f"WHERE sort_key > {marker} ORDER BY sort_key LIMIT {PAGE}"
        return cls(
            add=f"INSERT INTO {table} (sort_key, name) VALUES ({marker}, {marker})",  # noqa: S608 - quoted constant name, values bound
            page=f"SELECT sort_key, name FROM {table} {after}",  # noqa: S608 - as above
        )
