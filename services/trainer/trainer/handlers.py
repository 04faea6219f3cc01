"""trainer's handlers: keep a copy of the labels and of each frame's validated hash, and queue
a run for each label-threshold crossing (the :mod:`trainer.scheduler` starts it)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from sqlmodel import col, select

from labelloop.messaging.outbox import Transactions
from schemas.events import FrameProcessed, LabelsSubmitted, LabelsThresholdReached
from trainer import IDENTITY
from trainer.models import TrainingRequest
from trainer.queue import Enqueue, RunStatus, enqueue_decision

log = logging.getLogger(__name__)


def record_labels(events: Sequence[LabelsSubmitted], transactions: Transactions) -> None:
    """Keep the trainer's copy of the labels current (the last submission wins), a batch in
    one transaction."""
    transactions.project(IDENTITY.consumer, events)


def record_frames(events: Sequence[FrameProcessed], transactions: Transactions) -> None:
    """Keep what ingest validated of each frame (its hash): a run trains only on that."""
    transactions.project(IDENTITY.consumer, events)


def enqueue(event: LabelsThresholdReached, transactions: Transactions) -> Enqueue | None:
    """Queue a run for the task, or merge the event into the one already queued."""
    task_id = event.data.task_id
    with transactions.unit_of_work(IDENTITY.consumer, event.id) as uow:
        if uow.already_done:
            return None
        requests = uow.session.exec(
            select(TrainingRequest).where(
                TrainingRequest.task_id == task_id,
                col(TrainingRequest.status).in_([RunStatus.QUEUED, RunStatus.RUNNING]),
            )
        ).all()
        queued = next((r for r in requests if r.status == RunStatus.QUEUED), None)
        decision = enqueue_decision(
            queued is not None, any(r.status == RunStatus.RUNNING for r in requests)
        )
        if queued is not None:
            queued.threshold_event_ids = [*queued.threshold_event_ids, event.id]
            queued.priority = min(queued.priority, event.data.priority)
            uow.session.add(queued)
        else:
            uow.session.add(
                TrainingRequest(
                    id=uuid.uuid4().hex,
                    task_id=task_id,
                    priority=event.data.priority,
                    threshold_event_ids=[event.id],
                    first_threshold_at=event.time,
                )
            )
    log.info("task %s: threshold %d → %s", task_id, event.data.crossing, decision.value)
    return decision
