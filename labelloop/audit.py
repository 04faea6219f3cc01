"""``labelloop audit task <id>``: a task's state and its timeline, from one database.

The document answers an auditor's questions from the projections alone: who created the task,
which frames were processed or refused and why, who labeled which frame, which model version
pre-annotated which frame (and on which backend), every model version with its metrics, every
webhook delivery with its attempts, every event recorded but never published because the
broker refused it for good (``unpublished``, with the error), and the task's events in arrival
order with the
correlation and causation ids that link each effect to its cause. It reads the live database,
or with ``--db`` any other one, such as a replay's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from labelloop.messaging.relay import set_aside_events
from labelloop.projections import Projection
from labelloop.tasks import Task, TaskPublic
from labelloop.timeline import task_events


class UnknownTask(LookupError):
    pass


def task_audit(engine: Engine, task_id: str, projections: Sequence[Projection]) -> dict[str, Any]:
    """One task's document (the shape the README's Audit section describes): ``task``, then
    the sections each of ``projections`` declares (:attr:`Projection.audit`), in their order
    (the registry's: :func:`labelloop.composition.projections`), then ``unpublished`` and
    ``events``."""
    with Session(engine) as session:
        task = session.get(Task, task_id)
        if task is None:
            raise UnknownTask(f"no task {task_id} in this database")
        found: dict[str, Any] = {"task": TaskPublic.of(task).model_dump(mode="json")}
        for projection in projections:
            if projection.audit is not None:
                found.update(projection.audit(session, task_id))
        found["unpublished"] = set_aside_events(engine, task_id)
        found["events"] = _events(session, task_id)
    return found


def _events(session: Session, task_id: str) -> list[dict[str, Any]]:
    """The task's timeline, with the ids that link each effect to its cause."""
    return [
        {
            "seq": record.seq,
            "id": record.event_id,
            "type": record.type,
            "time": record.time.isoformat(),
            "source": record.source,
            "subject": record.subject,
            "correlationid": record.correlationid,
            "causationid": record.causationid,
            "data": json.loads(record.document).get("data"),
        }
        # by event time, which a replay reproduces (``seq`` is arrival order)
        for record in sorted(task_events(session, task_id), key=lambda r: (r.time, r.seq))
    ]
