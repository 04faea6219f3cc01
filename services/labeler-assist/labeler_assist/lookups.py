"""What labeler-assist knows of a job or a frame, as of the events announced so far.

A client is told of a job (``job.created``, ``task.jobs-ready``) the moment jobgen commits it,
while labeler-assist's own copy is written only when its consumer reads that event, which may
be later (lag, a restart, a consumer scaled to zero). So every route reads its own projection
first and, where that has not caught up, the announcing event itself from the outbox, where
its producer committed it with the state it announces. The row is built by the projection's
own function and never stored here: the consumer stores it when it gets there, so nothing is
counted twice and no route answers 404 for something a client was told exists.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from labeler_assist.models import AssistFrame, AssistJob, Preannotation
from labeler_assist.projections import frame_row, job_row
from labelloop.messaging.outbox import committed_event
from schemas.events import FrameProcessed, JobCreated


def find_job(session: Session, job_id: str) -> AssistJob | None:
    """The job, if ``job.created`` announced it (consumed here yet or not), else None."""
    job = session.get(AssistJob, job_id)
    if job is None and (event := committed_event(session, JobCreated, job_id)) is not None:
        job = AssistJob(**job_row(event))
    return job


def find_frame(session: Session, task_id: str, name: str) -> AssistFrame | None:
    """The processed frame, if ``frame.processed`` announced it, else None."""
    frame = session.get(AssistFrame, (task_id, name))
    if frame is None:
        event = committed_event(session, FrameProcessed, task_id, name)
        frame = None if event is None else AssistFrame(**frame_row(event))
    return frame


def newest_by_frame(rows: Iterable[Preannotation]) -> dict[str, Preannotation]:
    """Each frame's boxes from the newest model version that pre-annotated it."""
    newest: dict[str, Preannotation] = {}
    for row in rows:
        if row.frame not in newest or row.model_version > newest[row.frame].model_version:
            newest[row.frame] = row
    return newest
