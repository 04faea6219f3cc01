"""jobgen as a deployable unit: its typed subscriber and its HTTP routes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

from fastapi import APIRouter, HTTPException, status
from sqlmodel import select

from jobgen import IDENTITY
from jobgen.domain import natural_key
from jobgen.handlers import handle_data_ready, handle_frames_listed
from jobgen.models import Job, JobPublic
from jobgen.projections import PROJECTION
from labelloop.api.deps import PrincipalDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from schemas.events import JobCreated, TaskDataReady, TaskFramesListed, TaskJobsReady

__all__ = ["IDENTITY", "register", "router", "subscribers"]

router = APIRouter(prefix="/api", tags=["jobs"])
subscribers: EventSubscribers[Transactions] = EventSubscribers(
    IDENTITY, produces=(JobCreated, TaskJobsReady)
)


@subscribers.handler(TaskFramesListed, TaskDataReady)
async def on_listing(
    events: Sequence[TaskFramesListed | TaskDataReady], transactions: Transactions
) -> None:
    """Keep the listing parts; cut each task whose data is ready into jobs, with its parts.

    One handler for both types, because a ``task.data-ready`` commits in one transaction with
    the ``task.frames-listed`` parts of its task that precede it in the batch (the jobs are cut
    from them); the other tasks' parts before it are kept first, in their own transaction, and
    the parts after the last ``task.data-ready`` last. (Frame events are not jobgen's.)
    """
    for parts, ready in _listings(events):
        if ready is None:
            await asyncio.to_thread(handle_frames_listed, parts, transactions)
            continue
        task_id = ready.data.task_id
        others = [part for part in parts if part.data.task_id != task_id]
        if others:
            await asyncio.to_thread(handle_frames_listed, others, transactions)
        mine = [part for part in parts if part.data.task_id == task_id]
        await asyncio.to_thread(handle_data_ready, ready, transactions, mine)


def _listings(
    events: Sequence[TaskFramesListed | TaskDataReady],
) -> Iterator[tuple[list[TaskFramesListed], TaskDataReady | None]]:
    """The run cut after each ``task.data-ready``: the parts before it and it; then the parts
    after the last one, if any, with None."""
    parts: list[TaskFramesListed] = []
    for event in events:
        if isinstance(event, TaskFramesListed):  # the one type test: parts wait for their ready
            parts.append(event)
            continue
        yield parts, event
        parts = []
    if parts:
        yield parts, None


def register(runtime: Runtime) -> None:
    subscribers.subscribe(runtime, runtime.transactions.bound(PROJECTION))


@router.get("/tasks/{task_id}/jobs")
def task_jobs(task_id: str, session: SessionDep, principal: PrincipalDep) -> list[JobPublic]:
    """The task's jobs, in frame order; empty until ``task.jobs-ready``."""
    require_task(session, task_id, principal)
    jobs = session.exec(select(Job).where(Job.task_id == task_id)).all()
    ordered = sorted(jobs, key=lambda job: (job.start_frame, natural_key(job.id)))
    return [JobPublic.model_validate(job, from_attributes=True) for job in ordered]


@router.get("/jobs/{job_id}")
def read_job(job_id: str, session: SessionDep, principal: PrincipalDep) -> JobPublic:
    job = session.get(Job, job_id)
    if job is None or not principal.can_read(job.task_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return JobPublic.model_validate(job, from_attributes=True)
