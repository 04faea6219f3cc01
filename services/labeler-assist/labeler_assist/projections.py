"""labeler-assist's projections: its view of frames and jobs, the human labels, the label
counters and the pre-annotations, each from the event that announced it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col

from labeler_assist.models import (
    Annotation,
    AssistFrame,
    AssistJob,
    LabelCheck,
    LabelCounter,
    Preannotation,
)
from labelloop.bulk import found_keys, insert_rows, stored_rows
from labelloop.projections import Projection, task_documents
from schemas.events import (
    FrameProcessed,
    JobCreated,
    LabelIssuesFound,
    LabelsSubmitted,
    LabelsThresholdReached,
    PreannotationReady,
)


def frame_row(event: FrameProcessed) -> dict[str, Any]:
    """The ``assist_frames`` row ``frame.processed`` makes."""
    data = event.data
    return {
        "task_id": data.task_id,
        "name": data.frame,
        "object_key": data.object_key,
        "width": data.width,
        "height": data.height,
        "sha256": data.sha256,
    }


def job_row(event: JobCreated) -> dict[str, Any]:
    """The ``assist_jobs`` row ``job.created`` makes."""
    data = event.data
    return {"id": data.job_id, "task_id": data.task_id, "frames": list(data.frames)}


def apply_frame_processed(session: Session, event: FrameProcessed) -> None:
    if session.get(AssistFrame, (event.data.task_id, event.data.frame)) is None:
        session.add(AssistFrame(**frame_row(event)))


def apply_job_created(session: Session, event: JobCreated) -> None:
    if session.get(AssistJob, event.data.job_id) is None:
        session.add(AssistJob(**job_row(event)))


def apply_views(session: Session, events: Sequence[FrameProcessed | JobCreated]) -> None:
    """The appliers above for a batch, with one lookup per table instead of one per event."""
    frames = [event for event in events if isinstance(event, FrameProcessed)]
    jobs = [event for event in events if isinstance(event, JobCreated)]
    seen: set[object] = set()
    for task_id in {event.data.task_id for event in frames}:
        names = [event.data.frame for event in frames if event.data.task_id == task_id]
        found = found_keys(session, AssistFrame, "name", names, task_id=task_id)
        seen.update((task_id, name) for name in found)
    seen.update(found_keys(session, AssistJob, "id", [event.data.job_id for event in jobs]))
    frame_rows: list[dict[str, Any]] = []
    job_rows: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, FrameProcessed):
            key: object = (event.data.task_id, event.data.frame)
            row, rows = frame_row(event), frame_rows
        else:
            key, row, rows = event.data.job_id, job_row(event), job_rows
        if key not in seen:
            seen.add(key)
            rows.append(row)
    insert_rows(session, AssistFrame, frame_rows)
    insert_rows(session, AssistJob, job_rows)


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


def apply_labels_batch(session: Session, events: Sequence[LabelsSubmitted]) -> None:
    """:func:`apply_labels_submitted` for a batch in order, with one lookup per task."""
    latest: dict[tuple[str, str], tuple[LabelsSubmitted, list[dict[str, Any]]]] = {}
    totals: dict[str, int] = {}
    for event in events:
        data = event.data
        for item in data.annotations:
            latest[(data.task_id, item.frame)] = (event, [box.model_dump() for box in item.boxes])
        totals[data.task_id] = max(totals.get(data.task_id, 0), data.labeled_frames)
    for task_id, labeled in totals.items():
        frames = [frame for task, frame in latest if task == task_id]
        rows = {
            row.frame: row
            for row in stored_rows(session, Annotation, "frame", frames, task_id=task_id)
        }
        new = []
        for frame in frames:
            event, boxes = latest[(task_id, frame)]
            data = event.data
            fields = {
                "job_id": data.job_id,
                "boxes": boxes,
                "submitted_by": data.submitted_by,
                "updated_at": event.time,
            }
            row = rows.get(frame)
            if row is None:
                new.append({"task_id": task_id, "frame": frame, **fields})
                continue
            for name, value in fields.items():
                setattr(row, name, value)
            session.add(row)
        insert_rows(session, Annotation, new)
        counter = counter_of(session, task_id)
        counter.labeled_frames = max(counter.labeled_frames, labeled)
        session.add(counter)


def apply_preannotations_batch(session: Session, events: Sequence[PreannotationReady]) -> None:
    """:func:`apply_preannotation_ready` for a batch: the first of each key wins, one lookup
    per task and model version."""
    first: dict[tuple[str, int], dict[str, PreannotationReady]] = {}
    for event in events:
        data = event.data
        first.setdefault((data.task_id, data.model_version), {}).setdefault(data.frame, event)
    for (task_id, version), by_frame in first.items():
        known = found_keys(
            session, Preannotation, "frame", by_frame, task_id=task_id, model_version=version
        )
        insert_rows(
            session,
            Preannotation,
            [
                {
                    "task_id": task_id,
                    "frame": frame,
                    "model_version": version,
                    "boxes": [box.model_dump() for box in event.data.predictions],
                    "backend": event.data.backend,
                    "uncertainty": event.data.uncertainty,
                    "created_at": event.time,
                }
                for frame, event in by_frame.items()
                if frame not in known
            ],
        )


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
                uncertainty=data.uncertainty,
                created_at=event.time,
            )
        )


def apply_label_issues(session: Session, event: LabelIssuesFound) -> None:
    """Each checked frame's check replaces the one before (the newest check wins)."""
    data = event.data
    issues: dict[str, list[dict[str, Any]]] = {}
    for issue in data.issues:
        issues.setdefault(issue.frame, []).append(issue.model_dump(mode="json"))
    rows = {
        row.frame: row
        for row in stored_rows(
            session, LabelCheck, "frame", [c.frame for c in data.checked], task_id=data.task_id
        )
    }
    new = []
    for checked in data.checked:
        fields = {
            "model_version": data.model_version,
            "labels_sha256": checked.labels_sha256,
            "issues": issues.get(checked.frame, []),
            "checked_at": event.time,
        }
        row = rows.get(checked.frame)
        if row is None:
            new.append({"task_id": data.task_id, "frame": checked.frame, **fields})
            continue
        for name, value in fields.items():
            setattr(row, name, value)
        session.add(row)
    insert_rows(session, LabelCheck, new)


def apply_label_events(
    session: Session,
    events: Sequence[
        LabelsSubmitted | LabelsThresholdReached | PreannotationReady | LabelIssuesFound
    ],
) -> None:
    """``labels.events`` in a batch: labels, crossings, pre-annotations and label checks touch
    different rows (the counter's two columns only ever grow), so each kind is applied in bulk,
    in order."""
    apply_labels_batch(session, [e for e in events if isinstance(e, LabelsSubmitted)])
    for event in events:
        if isinstance(event, LabelsThresholdReached):
            apply_threshold_reached(session, event)
    apply_preannotations_batch(session, [e for e in events if isinstance(e, PreannotationReady)])
    for event in events:
        if isinstance(event, LabelIssuesFound):
            session.flush()  # a frame's earlier check in this batch is found and replaced
            apply_label_issues(session, event)


def audit(session: Session, task_id: str) -> dict[str, list[Any]]:
    """Who labeled which frame, which model version pre-annotated which frame on which
    backend, and which labels a model that never trained on them found suspect."""
    return {
        "annotations": task_documents(session, Annotation, task_id, col(Annotation.frame)),
        "preannotations": task_documents(session, Preannotation, task_id, col(Preannotation.frame)),
        "label_checks": task_documents(session, LabelCheck, task_id, col(LabelCheck.frame)),
    }


PROJECTION = Projection(
    tables=(
        "assist_frames",
        "assist_jobs",
        "annotations",
        "label_counters",
        "preannotations",
        "label_checks",
    ),
    appliers={
        FrameProcessed: apply_frame_processed,
        JobCreated: apply_job_created,
        LabelsSubmitted: apply_labels_submitted,
        LabelsThresholdReached: apply_threshold_reached,
        PreannotationReady: apply_preannotation_ready,
        LabelIssuesFound: apply_label_issues,
    },
    batch_appliers={
        FrameProcessed: apply_views,
        JobCreated: apply_views,
        LabelsSubmitted: apply_label_events,
        LabelsThresholdReached: apply_label_events,
        PreannotationReady: apply_label_events,
        LabelIssuesFound: apply_label_events,
    },
    audit=audit,
)
