"""trainer as a deployable unit: its subscriber, its scheduler, and the model routes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter
from sqlmodel import col, select

from labelloop.api.deps import PrincipalDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.messaging.batches import subscribe_batches
from labelloop.runtime import Runtime
from schemas.events import FrameProcessed, LabelsSubmitted, LabelsThresholdReached, event_union
from schemas.topics import Topic
from trainer.handlers import Scheduler, enqueue, record_frames, record_labels
from trainer.models import ModelVersion, ModelVersionPublic
from trainer.projections import PROJECTION

NAME = "trainer"
CONSUMER_GROUP = "labelloop-trainer"
TOPICS = (Topic.LABELS_EVENTS, Topic.INGEST_EVENTS)  # ingest's: each frame's validated hash

__all__ = ["CONSUMER_GROUP", "NAME", "TOPICS", "register", "router"]

router = APIRouter(prefix="/api", tags=["models"])
LabelsEvent = event_union(*TOPICS)


def register(runtime: Runtime) -> None:
    transactions = runtime.transactions.bound(PROJECTION)

    async def apply(events: Sequence[LabelsEvent]) -> None:  # type: ignore[valid-type]
        """Keep validated frames and submitted labels; queue a run for each threshold crossing."""
        frames = [event for event in events if isinstance(event, FrameProcessed)]
        await asyncio.to_thread(record_frames, frames, transactions)
        labels = [e for e in events if isinstance(e, LabelsSubmitted | LabelsThresholdReached)]
        run: list[LabelsSubmitted] = []  # consecutive submissions go in one transaction
        for event in [*labels, None]:
            if isinstance(event, LabelsSubmitted):
                run.append(event)
                continue
            await asyncio.to_thread(record_labels, run, transactions)
            run = []
            if isinstance(event, LabelsThresholdReached):
                await asyncio.to_thread(enqueue, event, transactions)

    subscribe_batches(
        runtime,
        TOPICS,
        group=CONSUMER_GROUP,
        model=LabelsEvent,
        apply=apply,
        title="trainer",
    )

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
