"""jobgen's handlers: ``task.frames-listed`` parts kept, then ``task.data-ready`` in, jobs and
their events out, atomically."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlmodel import Session, col, select

from jobgen import IDENTITY
from jobgen.domain import job_id, plan_jobs
from jobgen.models import FrameListing
from labelloop.messaging.outbox import Transactions
from labelloop.tasks import Task
from schemas.events import (
    JobCreated,
    JobCreatedData,
    TaskDataReady,
    TaskFramesListed,
    TaskJobsReady,
    TaskJobsReadyData,
)

log = logging.getLogger(__name__)


class ListingIncomplete(LookupError):
    """``task.data-ready`` came without all the parts that precede it: never retried."""


def handle_frames_listed(events: Sequence[TaskFramesListed], transactions: Transactions) -> None:
    """Keep listing parts (a batch in one transaction) for the ``task.data-ready`` after them."""
    transactions.project(IDENTITY.consumer, events)


def listed_frames(session: Session, event: TaskDataReady) -> list[str]:
    """The task's processed frames, from the parts ``event`` announces."""
    parts = session.exec(
        select(FrameListing)
        .where(FrameListing.task_id == event.data.task_id)
        .order_by(col(FrameListing.part))
    ).all()
    frames = [name for part in parts for name in part.frames]
    if len(parts) != event.data.parts or len(frames) != event.data.frame_count:
        raise ListingIncomplete(
            f"task {event.data.task_id}: {len(parts)} of {event.data.parts} listing parts, "
            f"{len(frames)} of {event.data.frame_count} frames"
        )
    return frames


def handle_data_ready(
    event: TaskDataReady, transactions: Transactions, listed: Sequence[TaskFramesListed] = ()
) -> list[str]:
    """Cut the task into jobs; one ``job.created`` each, then ``task.jobs-ready``.

    Jobs, events and the processed mark commit together (with the listing parts that came in
    the same batch), and job ids are deterministic, so a crash at any point followed by
    redelivery yields exactly the same jobs once.
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
        plans = plan_jobs(listed_frames(uow.session, event), task.segment_size, task.overlap)
        jobs = []
        for plan in plans:
            new_job = job_id(task_id, plan.index)
            created = JobCreated.create(
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
            jobs.append(created)
        ready = TaskJobsReady.create(
            TaskJobsReadyData(task_id=task_id, job_count=len(jobs)),
            source=IDENTITY.source,
            key=(task_id,),
            taskid=task_id,
            cause=event,
        )
        uow.record_all([*jobs, ready])
    log.info("task %s: %d jobs", task_id, len(jobs))
    return [job.data.job_id for job in jobs]
