"""jobgen as a deployable unit: its Kafka subscriber and its HTTP routes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException, status
from sqlmodel import select

from jobgen.domain import natural_key
from jobgen.handlers import handle_data_ready
from jobgen.models import Job, JobPublic
from labelloop.api.deps import PrincipalDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.messaging.broker import consumer_options
from labelloop.runtime import Runtime
from schemas.events import TaskDataReady, event_union
from schemas.topics import Topic

NAME = "jobgen"
CONSUMER_GROUP = "labelloop-jobgen"
TOPICS = (Topic.INGEST_EVENTS,)

__all__ = ["CONSUMER_GROUP", "NAME", "TOPICS", "register", "router"]

router = APIRouter(prefix="/api", tags=["jobs"])
IngestEvent = event_union(Topic.INGEST_EVENTS)


def register(runtime: Runtime) -> None:
    @runtime.broker.subscriber(
        runtime.settings.topic(Topic.INGEST_EVENTS),
        **consumer_options(runtime.settings, CONSUMER_GROUP),
        title="jobgen",
    )
    async def on_ingest_event(event: IngestEvent) -> None:  # type: ignore[valid-type]
        if isinstance(event, TaskDataReady):
            await asyncio.to_thread(handle_data_ready, event, runtime.transactions)


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
