"""ingest's projection: the ``frames`` table, from ``frame.processed`` and ``frame.rejected``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col

from ingest.models import Frame, FramePublic
from labelloop.bulk import insert_rows, stored_rows
from labelloop.projections import Projection, task_documents
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


def apply_frame_events(session: Session, events: Sequence[FrameProcessed | FrameRejected]) -> None:
    """Frame events of any tasks in order (a batch: live or replayed), as the single appliers
    would: frames already stored change through them, new ones are built as rows and inserted
    in bulk."""
    by_task: dict[str, list[FrameProcessed | FrameRejected]] = {}
    for event in events:
        by_task.setdefault(event.data.task_id, []).append(event)
    for task_id, task_events in by_task.items():
        names = {event.data.frame for event in task_events}
        stored = {
            frame.name: frame
            for frame in stored_rows(session, Frame, "name", names, task_id=task_id)
        }
        new: dict[str, dict[str, Any]] = {}
        for event in task_events:
            name = event.data.frame
            if name in stored:
                if isinstance(event, FrameProcessed):
                    _processed(session, stored[name], event)
                else:
                    _rejected(session, stored[name], event)
            elif isinstance(event, FrameProcessed):
                new.setdefault(name, _processed_row(event))  # the first outcome wins
            else:
                new[name] = {**new.get(name, _rejected_row(event)), **_rejection(event)}
        insert_rows(session, Frame, list(new.values()))


def _processed_row(event: FrameProcessed) -> dict[str, Any]:
    data = event.data
    return {
        **_EMPTY_ROW,
        **data.model_dump(exclude={"frame"}),
        "name": data.frame,
        "status": "processed",
        "processed_at": event.time,
    }


def _rejected_row(event: FrameRejected) -> dict[str, Any]:
    data = event.data
    return {
        **_EMPTY_ROW,
        "task_id": data.task_id,
        "name": data.frame,
        "object_key": data.object_key,
        "processed_at": event.time,
    }


def _rejection(event: FrameRejected) -> dict[str, Any]:
    return {"status": "rejected", "code": event.data.code, "reason": event.data.reason}


_EMPTY_ROW: dict[str, Any] = dict.fromkeys(Frame.model_fields)
"""Every column, so rows built from either event insert together."""


def _processed(session: Session, frame: Frame | None, event: FrameProcessed) -> Frame:
    if frame is None:
        frame = Frame(**_processed_row(event))
        session.add(frame)
    return frame


def _rejected(session: Session, frame: Frame | None, event: FrameRejected) -> Frame:
    if frame is None:
        frame = Frame(**_rejected_row(event))
    for name, value in _rejection(event).items():
        setattr(frame, name, value)
    session.add(frame)
    return frame


def audit(session: Session, task_id: str) -> dict[str, list[Any]]:
    """Every frame of the task: processed (hash, size) or refused with its reason."""
    return {"frames": task_documents(session, Frame, task_id, col(Frame.name), FramePublic)}


PROJECTION = Projection(
    tables=("frames",),
    appliers={FrameProcessed: apply_frame_processed, FrameRejected: apply_frame_rejected},
    batch_appliers={FrameProcessed: apply_frame_events, FrameRejected: apply_frame_events},
    audit=audit,
)
