"""trainer as a deployable unit: its typed subscribers, its scheduler, and the model routes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter
from sqlmodel import col, select

from labelloop.api.deps import PrincipalDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from schemas.events import (
    FrameProcessed,
    LabelsSubmitted,
    LabelsThresholdReached,
    ModelPublished,
    ModelRejected,
    TrainingFailed,
    TrainingPreempted,
    TrainingStarted,
)
from trainer import IDENTITY
from trainer.handlers import enqueue, record_frames, record_labels
from trainer.models import ModelVersion, ModelVersionPublic
from trainer.projections import PROJECTION
from trainer.scheduler import Scheduler

__all__ = ["IDENTITY", "register", "router", "subscribers"]

router = APIRouter(prefix="/api", tags=["models"])
subscribers: EventSubscribers[Transactions] = EventSubscribers(
    IDENTITY,
    # recorded by the scheduler and by each run's child process (trainer.run)
    produces=(TrainingStarted, ModelPublished, ModelRejected, TrainingFailed, TrainingPreempted),
)


@subscribers.handler(FrameProcessed, whole_batch=True)
async def on_frame_processed(events: Sequence[FrameProcessed], transactions: Transactions) -> None:
    """Keep each validated frame's hash (a run trains only on that), the batch's at once.

    Whole-batch: ``ingest.events`` and ``labels.events`` keep no order between them, so the
    frames of a batch go in one transaction before its labels (a label may name a frame of
    the same batch).
    """
    await asyncio.to_thread(record_frames, list(events), transactions)


@subscribers.handler(LabelsSubmitted)
async def on_labels_submitted(
    events: Sequence[LabelsSubmitted], transactions: Transactions
) -> None:
    """Keep the trainer's copy of the labels (the last submission wins), a run at once."""
    await asyncio.to_thread(record_labels, list(events), transactions)


@subscribers.handler(LabelsThresholdReached)
async def on_threshold_reached(
    events: Sequence[LabelsThresholdReached], transactions: Transactions
) -> None:
    """Queue a training run for each threshold crossing, or merge it into the queued one."""
    for event in events:
        await asyncio.to_thread(enqueue, event, transactions)


def register(runtime: Runtime) -> None:
    transactions = runtime.transactions.bound(PROJECTION)
    subscribers.subscribe(runtime, transactions)
    runtime.background.append(Scheduler(transactions, runtime.settings).run)


@router.get("/tasks/{task_id}/models")
def task_models(
    task_id: str, session: SessionDep, principal: PrincipalDep
) -> list[ModelVersionPublic]:
    """The task's model versions, newest first; `current` marks the one that pre-annotates."""
    require_task(session, task_id, principal)
    rows = session.exec(
        select(ModelVersion)
        .where(ModelVersion.task_id == task_id)
        .order_by(col(ModelVersion.version).desc())
    ).all()
    return [ModelVersionPublic.model_validate(row, from_attributes=True) for row in rows]
