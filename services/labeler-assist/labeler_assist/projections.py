"""labeler-assist's projections: its view of frames and jobs, the human labels, the label
counters and the pre-annotations, each from the event that announced it."""

from __future__ import annotations

from sqlmodel import Session

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
