"""The ``api`` service: tasks, and the event-log projection behind timelines and SSE."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter

from labelloop.api import tasks, tokens
from labelloop.messaging.batches import subscribe_batches
from labelloop.runtime import Runtime
from labelloop.timeline import record_events
from schemas.events import PROJECT_TOPICS, event_union

NAME = "api"
CONSUMER_GROUP = "labelloop-timeline"
TOPICS = PROJECT_TOPICS

__all__ = ["CONSUMER_GROUP", "NAME", "TOPICS", "register", "router"]

router = APIRouter()
router.include_router(tasks.router)
router.include_router(tokens.router)

AnyEvent = event_union(*PROJECT_TOPICS)


def register(runtime: Runtime) -> None:
    async def apply(events: Sequence[AnyEvent]) -> None:  # type: ignore[valid-type]
        """Append the events to the timeline, the batch in one transaction."""
        await asyncio.to_thread(record_events, runtime.engine, events)

    subscribe_batches(
        runtime,
        TOPICS,
        group=CONSUMER_GROUP,
        model=AnyEvent,
        apply=apply,
        title="timeline",
    )
