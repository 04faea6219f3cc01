"""ingest's projection: the ``frames`` table, from ``frame.processed`` and ``frame.rejected``."""

from __future__ import annotations

from sqlmodel import Session

from ingest.models import Frame
from labelloop.projections import Projection
from schemas.events import FrameProcessed, FrameRejected


def apply_frame_processed(session: Session, event: FrameProcessed) -> Frame:
    """A processed frame's row; the first outcome of a frame wins (re-uploads are ignored)."""
    data = event.data
    frame = session.get(Frame, (data.task_id, data.frame))
    if frame is None:
        fields = data.model_dump(exclude={"frame"})
        frame = Frame(**fields, name=data.frame, status="processed", processed_at=event.time)
        session.add(frame)
    return frame


def apply_frame_rejected(session: Session, event: FrameRejected) -> Frame:
    """A rejected frame's row; a processed frame whose hash the manifest refutes keeps its
    measurements and changes status."""
    data = event.data
    frame = session.get(Frame, (data.task_id, data.frame))
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
)
