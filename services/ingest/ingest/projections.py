"""ingest's projection: the ``frames`` table, from ``frame.processed`` and ``frame.rejected``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from ingest.models import Frame
from labelloop.projections import Projection
from schemas.events import FrameProcessed, FrameRejected


def apply_frame_processed(session: Session, event: FrameProcessed) -> Frame:
    """A processed frame's row; the first outcome of a frame wins (re-uploads are ignored)."""
    data = event.data
    return _processed(session, session.get(Frame, (data.task_id, data.frame)), event)


def apply_frame_rejected(session: Session, event: FrameRejected) -> Frame:
    """A rejected frame's row; a processed frame whose hash the manifest refutes keeps its
    measurements and changes status."""
    data = event.data
    return _rejected(session, session.get(Frame, (data.task_id, data.frame)), event)


def apply_frame_outcomes(
    session: Session, task_id: str, events: Sequence[FrameProcessed | FrameRejected]
) -> list[Frame]:
    """One task's frame events in order, as the single appliers would, in one query."""
    names = {event.data.frame for event in events}
    rows = {
        frame.name: frame
        for frame in session.exec(
            select(Frame).where(Frame.task_id == task_id, col(Frame.name).in_(names))
        )
    }
    frames = []
    for event in events:
        name = event.data.frame
        if isinstance(event, FrameProcessed):
            rows[name] = _processed(session, rows.get(name), event)
        else:
            rows[name] = _rejected(session, rows.get(name), event)
        frames.append(rows[name])
    return frames


def apply_frame_events(session: Session, events: Sequence[FrameProcessed | FrameRejected]) -> None:
    """Frame events of any tasks in order (a replay's batch): :func:`apply_frame_outcomes`
    per task."""
    by_task: dict[str, list[FrameProcessed | FrameRejected]] = {}
    for event in events:
        by_task.setdefault(event.data.task_id, []).append(event)
    for task_id, task_events in by_task.items():
        apply_frame_outcomes(session, task_id, task_events)


def _processed(session: Session, frame: Frame | None, event: FrameProcessed) -> Frame:
    if frame is None:
        data = event.data
        fields = data.model_dump(exclude={"frame"})
        frame = Frame(**fields, name=data.frame, status="processed", processed_at=event.time)
        session.add(frame)
    return frame


def _rejected(session: Session, frame: Frame | None, event: FrameRejected) -> Frame:
    data = event.data
    if frame is None:
        frame = Frame(
            task_id=data.task_id,
            name=data.frame,
            object_key=data.object_key,
            status="rejected",
            processed_at=event.time,
        )
    frame.status, frame.code, frame.reason = "rejected", data.code, data.reason
    session.add(frame)
    return frame


PROJECTION = Projection(
    tables=("frames",),
    appliers={FrameProcessed: apply_frame_processed, FrameRejected: apply_frame_rejected},
    batch_appliers={FrameProcessed: apply_frame_events, FrameRejected: apply_frame_events},
)
