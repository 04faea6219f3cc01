"""labeler-assist's projections: its view of frames and jobs, the human labels, the label
counters and the pre-annotations, each from the event that announced it."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from labeler_assist.models import (
    Annotation,
    AssistFrame,
    AssistJob,
    LabelCounter,
    Preannotation,
)
from labelloop.projections import Projection
from schemas.events import (
    FrameProcessed,
    JobCreated,
    LabelsSubmitted,
    LabelsThresholdReached,
    PreannotationReady,
)


def frame_row(event: FrameProcessed) -> AssistFrame:
    data = event.data
    return AssistFrame(
        task_id=data.task_id,
        name=data.frame,
        object_key=data.object_key,
        width=data.width,
        height=data.height,
    )


def job_row(event: JobCreated) -> AssistJob:
    data = event.data
    return AssistJob(id=data.job_id, task_id=data.task_id, frames=list(data.frames))


def apply_frame_processed(session: Session, event: FrameProcessed) -> None:
    if session.get(AssistFrame, (event.data.task_id, event.data.frame)) is None:
        session.add(frame_row(event))


def apply_job_created(session: Session, event: JobCreated) -> None:
    if session.get(AssistJob, event.data.job_id) is None:
        session.add(job_row(event))


def apply_views(session: Session, events: Sequence[FrameProcessed | JobCreated]) -> None:
    """The appliers above for a batch, with one lookup per table instead of one per event."""
    frames = [event for event in events if isinstance(event, FrameProcessed)]
    jobs = [event for event in events if isinstance(event, JobCreated)]
    seen: set[object] = set()
    for task_id in {event.data.task_id for event in frames}:
        names = [event.data.frame for event in frames if event.data.task_id == task_id]
        found = session.exec(
            select(AssistFrame.name).where(
                AssistFrame.task_id == task_id, col(AssistFrame.name).in_(names)
            )
        )
        seen.update((task_id, name) for name in found)
    if jobs:
        ids = [event.data.job_id for event in jobs]
        found_ids = session.exec(select(AssistJob.id).where(col(AssistJob.id).in_(ids)))
        seen.update(found_ids)
    for event in events:
        key: object
        row: AssistFrame | AssistJob
        if isinstance(event, FrameProcessed):
            key, row = (event.data.task_id, event.data.frame), frame_row(event)
        else:
            key, row = event.data.job_id, job_row(event)
        if key not in seen:
            seen.add(key)
            session.add(row)


def counter_of(session: Session, task_id: str) -> LabelCounter:
    counter = session.get(LabelCounter, task_id)
    if counter is None:
        counter = LabelCounter(task_id=task_id)
        session.add(counter)
    return counter


def apply_labels_submitted(session: Session, event: LabelsSubmitted) -> None:
    """The last submission of a frame wins; the counter takes the event's running total."""
    data = event.data
    for item in data.annotations:
        boxes = [box.model_dump() for box in item.boxes]
        annotation = session.get(Annotation, (data.task_id, item.frame))
        if annotation is None:
            annotation = Annotation(
                task_id=data.task_id,
                frame=item.frame,
                job_id=data.job_id,
                boxes=boxes,
                submitted_by=data.submitted_by,
            )
        annotation.boxes, annotation.job_id = boxes, data.job_id
        annotation.submitted_by, annotation.updated_at = data.submitted_by, event.time
        session.add(annotation)
    counter = counter_of(session, data.task_id)
    counter.labeled_frames = max(counter.labeled_frames, data.labeled_frames)
    session.add(counter)


def apply_threshold_reached(session: Session, event: LabelsThresholdReached) -> None:
    counter = counter_of(session, event.data.task_id)
    counter.crossings = max(counter.crossings, event.data.crossing)
    session.add(counter)


def apply_preannotation_ready(session: Session, event: PreannotationReady) -> None:
    data = event.data
    if session.get(Preannotation, (data.task_id, data.frame, data.model_version)) is None:
        session.add(
            Preannotation(
                task_id=data.task_id,
                frame=data.frame,
                model_version=data.model_version,
                boxes=[box.model_dump() for box in data.predictions],
                backend=data.backend,
                created_at=event.time,
            )
        )


PROJECTION = Projection(
    tables=("assist_frames", "assist_jobs", "annotations", "label_counters", "preannotations"),
    appliers={
        FrameProcessed: apply_frame_processed,
        JobCreated: apply_job_created,
        LabelsSubmitted: apply_labels_submitted,
        LabelsThresholdReached: apply_threshold_reached,
        PreannotationReady: apply_preannotation_ready,
    },
)
