"""Labels: a job's annotations taken, and each label-threshold crossing announced exactly once.

Every submission first locks the task's counter row (:func:`_lock_counter`), so concurrent
submissions serialise; a crossing's event id derives from task and crossing number, so each is
recorded once. The job and its frames are taken as announced (:mod:`labeler_assist.lookups`).
"""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlmodel import Session, col

from labeler_assist import IDENTITY
from labeler_assist.domain import (
    FrameSize,
    InvalidAnnotation,
    new_crossings,
    validate_frame_labels,
)
from labeler_assist.lookups import find_frame, find_job
from labeler_assist.models import Annotation, AssistJob, LabelCounter
from labelloop.auth import Principal
from labelloop.messaging.outbox import UnitOfWork
from labelloop.tasks import Task
from schemas.events import (
    FrameLabels,
    LabelsSubmitted,
    LabelsSubmittedData,
    LabelsThresholdReached,
    LabelsThresholdReachedData,
)


class NotFound(LookupError):
    """The job or task does not exist."""


class NotYetKnown(LookupError):
    """A frame's ``frame.processed`` has not reached labeler-assist yet: retry shortly."""


class NotPermitted(PermissionError):
    """The caller may see the job but not label it (an auditor)."""


def submit_labels(
    uow: UnitOfWork, job_id: str, annotations: list[FrameLabels], principal: Principal
) -> LabelsSubmitted:
    """Store a job's labels; announce them, and each label-threshold crossing exactly once.

    The job and its frames are taken as announced (:mod:`labeler_assist.lookups`), so labels
    for a job a client was just told of are taken even before this service's consumer has read
    ``job.created``. The caller's right to label is checked on the job found here, in the
    transaction that writes. Raises :class:`NotFound` for an unknown job (or one of a task the
    caller may not see), :class:`NotPermitted` for a role that cannot label, and
    ``InvalidAnnotation`` for a bad box or a frame outside the job; nothing is stored then.
    """
    session = uow.session
    job, task = _job_to_label(session, job_id, principal)
    _validate(session, job, task, annotations)
    counter = _lock_counter(session, task.id)
    newly_labeled = sum(
        1 for item in annotations if session.get(Annotation, (task.id, item.frame)) is None
    )
    submitted = LabelsSubmitted.create(
        LabelsSubmittedData(
            task_id=task.id,
            job_id=job_id,
            annotations=annotations,
            submitted_by=principal.name,
            labeled_frames=counter.labeled_frames + newly_labeled,
        ),
        source=IDENTITY.source,
        key=(uuid.uuid4().hex,),
        taskid=task.id,
        subject=job_id,
    )
    uow.record(submitted)  # its projection counts the newly labeled frames on ``counter``
    for crossing in new_crossings(counter.labeled_frames, task.label_threshold, counter.crossings):
        reached = LabelsThresholdReached.create(
            LabelsThresholdReachedData(
                task_id=task.id,
                labeled_frames=counter.labeled_frames,
                crossing=crossing,
                priority=task.priority,
            ),
            source=IDENTITY.source,
            key=(task.id, crossing),
            taskid=task.id,
            cause=submitted,
        )
        uow.record(reached)
    return submitted


def _job_to_label(session: Session, job_id: str, principal: Principal) -> tuple[AssistJob, Task]:
    """The job, as announced, and its task, if ``principal`` may label it."""
    job = find_job(session, job_id)
    if job is None or not principal.can_read(job.task_id):
        raise NotFound(f"no job {job_id}")
    if not principal.can_label(job.task_id):
        raise NotPermitted(f"the {principal.role} role cannot label")
    task = session.get(Task, job.task_id)
    if task is None:
        raise NotFound(f"no task {job.task_id}")
    return job, task


def _validate(session: Session, job: AssistJob, task: Task, annotations: list[FrameLabels]) -> None:
    """Each frame once, of the job, known here, and every box valid on it."""
    names = [item.frame for item in annotations]
    if len(set(names)) != len(names):
        raise InvalidAnnotation("a frame appears more than once")
    for item in annotations:
        if item.frame not in job.frames:
            raise InvalidAnnotation(f"{item.frame} is not a frame of job {job.id}")
        frame = find_frame(session, task.id, item.frame)
        if frame is None:
            raise NotYetKnown(f"frame {item.frame} is not known to labeler-assist yet")
        validate_frame_labels(item, FrameSize(frame.width, frame.height), set(task.labels))


def _lock_counter(session: Session, task_id: str) -> LabelCounter:
    """Take the task's counter row for this transaction, so concurrent submissions serialise."""
    bumped = session.execute(
        update(LabelCounter)
        .where(col(LabelCounter.task_id) == task_id)
        .values(labeled_frames=LabelCounter.labeled_frames)
    )
    if bumped.rowcount == 0:  # type: ignore[attr-defined]
        session.add(LabelCounter(task_id=task_id))
        session.flush()
    counter = session.get(LabelCounter, task_id, populate_existing=True)
    assert counter is not None
    return counter
