"""jobgen as a deployable unit: its Kafka subscriber and its HTTP routes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter, HTTPException, status
from sqlmodel import select

from jobgen.domain import natural_key
from jobgen.handlers import handle_data_ready, handle_frames_listed
from jobgen.models import Job, JobPublic
from jobgen.projections import PROJECTION
from labelloop.api.deps import PrincipalDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.messaging.batches import subscribe_batches
from labelloop.runtime import Runtime
from schemas.events import TaskDataReady, TaskFramesListed, event_union
from schemas.topics import Topic

NAME = "jobgen"
CONSUMER_GROUP = "labelloop-jobgen"
TOPICS = (Topic.INGEST_EVENTS,)

__all__ = ["CONSUMER_GROUP", "NAME", "TOPICS", "register", "router"]

router = APIRouter(prefix="/api", tags=["jobs"])
IngestEvent = event_union(Topic.INGEST_EVENTS)


def register(runtime: Runtime) -> None:
    transactions = runtime.transactions.bound(PROJECTION)

    async def apply(events: Sequence[IngestEvent]) -> None:  # type: ignore[valid-type]
        """Keep listing parts; cut each task whose data is ready into jobs, in order (frame
        events are not jobgen's)."""
        listed: list[TaskFramesListed] = []
        for event in events:
            if isinstance(event, TaskFramesListed):
                listed.append(event)
            elif isinstance(event, TaskDataReady):  # with its parts, in one transaction
                task_id = event.data.task_id
                others = [part for part in listed if part.data.task_id != task_id]
                if others:
                    await asyncio.to_thread(handle_frames_listed, others, transactions)
                mine = [part for part in listed if part.data.task_id == task_id]
                await asyncio.to_thread(handle_data_ready, event, transactions, mine)
                listed = []
        if listed:
            await asyncio.to_thread(handle_frames_listed, listed, transactions)

    subscribe_batches(
        runtime,
        TOPICS,
        group=CONSUMER_GROUP,
        model=IngestEvent,
        apply=apply,
        title="jobgen",
    )


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
