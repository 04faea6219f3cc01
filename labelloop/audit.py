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
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from labelloop.messaging.outbox import set_aside_events
from labelloop.tasks import Task, TaskPublic
from labelloop.timeline import task_events


class UnknownTask(LookupError):
    pass


def _rows(session: Session, model: Any, *where: Any, order: Any = None) -> list[Any]:
    query = select(model).where(*where)
    if order is not None:
        query = query.order_by(order)
    return list(session.exec(query))


def task_audit(engine: Engine, task_id: str) -> dict[str, Any]:
    """``{"task", "jobs", "frames", "annotations", "preannotations", "models",
    "webhook_deliveries", "unpublished", "events"}`` for one task (the shape in
    ``CONTRACTS.md``, plus the pre-annotations, deliveries and unpublished events)."""
    from ingest.models import Frame, FramePublic
    from jobgen.models import Job, JobPublic
    from labeler_assist.models import Annotation, Preannotation
    from trainer.models import ModelVersion
    from webhooks.models import Attempt, AttemptPublic, Delivery, DeliveryPublic

    with Session(engine) as session:
        task = session.get(Task, task_id)
        if task is None:
            raise UnknownTask(f"no task {task_id} in this database")
        deliveries = []
        for delivery in _rows(
            session, Delivery, Delivery.task_id == task_id, order=col(Delivery.created_at)
        ):
            attempts = _rows(
                session, Attempt, Attempt.delivery_id == delivery.id, order=col(Attempt.attempt)
            )
            public = DeliveryPublic.model_validate(delivery, from_attributes=True)
            public.attempt_log = [
                AttemptPublic.model_validate(a, from_attributes=True) for a in attempts
            ]
            deliveries.append(public.model_dump(mode="json"))
        return {
            "task": TaskPublic.of(task).model_dump(mode="json"),
            "jobs": [
                JobPublic.model_validate(job, from_attributes=True).model_dump(mode="json")
                for job in _rows(session, Job, Job.task_id == task_id, order=col(Job.start_frame))
            ],
            "frames": [
                FramePublic.model_validate(frame, from_attributes=True).model_dump(mode="json")
                for frame in _rows(session, Frame, Frame.task_id == task_id, order=col(Frame.name))
            ],
            "annotations": [
                annotation.model_dump(mode="json")
                for annotation in _rows(
                    session, Annotation, Annotation.task_id == task_id, order=col(Annotation.frame)
                )
            ],
            "preannotations": [
                row.model_dump(mode="json")
                for row in _rows(
                    session,
                    Preannotation,
                    Preannotation.task_id == task_id,
                    order=col(Preannotation.frame),
                )
            ],
            "models": [
                row.model_dump(mode="json")
                for row in _rows(
                    session,
                    ModelVersion,
                    ModelVersion.task_id == task_id,
                    order=col(ModelVersion.version),
                )
            ],
            "webhook_deliveries": deliveries,
            "unpublished": set_aside_events(engine, task_id),
            "events": [
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
            ],
        }
