"""jobgen's projection: the ``jobs`` table, from ``job.created``."""

from __future__ import annotations

from sqlmodel import Session

from jobgen.models import Job
from labelloop.projections import Projection
from schemas.events import JobCreated


def apply_job_created(session: Session, event: JobCreated) -> Job:
    data = event.data
    job = session.get(Job, data.job_id)
    if job is None:
        job = Job(
            id=data.job_id,
            task_id=data.task_id,
            start_frame=data.start_frame,
            stop_frame=data.stop_frame,
            frames=list(data.frames),
            created_at=event.time,
        )
        session.add(job)
    return job


PROJECTION = Projection(tables=("jobs",), appliers={JobCreated: apply_job_created})
