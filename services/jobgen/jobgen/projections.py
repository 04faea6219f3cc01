"""jobgen's projection: ``jobs`` from ``job.created``, ``frame_listings`` from
``task.frames-listed``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col

from jobgen.models import FrameListing, Job, JobPublic
from labelloop.bulk import found_keys, insert_rows
from labelloop.projections import Projection, task_documents
from schemas.events import JobCreated, TaskFramesListed


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


def apply_jobs_created(session: Session, events: Sequence[JobCreated]) -> None:
    """:func:`apply_job_created` for a batch: the first event of a job wins, one lookup."""
    first: dict[str, JobCreated] = {}
    for event in events:
        first.setdefault(event.data.job_id, event)
    known = found_keys(session, Job, "id", first)
    insert_rows(
        session,
        Job,
        [
            {
                "id": job_id,
                "task_id": event.data.task_id,
                "start_frame": event.data.start_frame,
                "stop_frame": event.data.stop_frame,
                "frames": list(event.data.frames),
                "created_at": event.time,
            }
            for job_id, event in first.items()
            if job_id not in known
        ],
    )


def apply_frames_listed(session: Session, event: TaskFramesListed) -> FrameListing:
    data = event.data
    listing = session.get(FrameListing, (data.task_id, data.part))
    if listing is None:
        listing = FrameListing(
            task_id=data.task_id, part=data.part, parts=data.parts, frames=list(data.frames)
        )
        session.add(listing)
    return listing


def audit(session: Session, task_id: str) -> dict[str, list[Any]]:
    """The task's jobs, in frame order."""
    return {"jobs": task_documents(session, Job, task_id, col(Job.start_frame), JobPublic)}


PROJECTION = Projection(
    tables=("jobs", "frame_listings"),
    appliers={JobCreated: apply_job_created, TaskFramesListed: apply_frames_listed},
    batch_appliers={JobCreated: apply_jobs_created},
    audit=audit,
)
