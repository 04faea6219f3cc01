"""The ``api`` service: tasks, the event-log projection behind timelines and SSE, and the
read-only dashboard at ``/ui/``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from sqlalchemy.engine import Engine

from labelloop.api import IDENTITY, dashboard, tasks, tokens
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from labelloop.timeline import record_events
from schemas.envelope import CloudEvent
from schemas.events import EVENT_TYPES, TaskCreated

"""The api's timeline consumer keeps the group it had before identities (a new one would read
every topic from the start again)."""

__all__ = ["IDENTITY", "OPEN_BODIES", "register", "router", "subscribers"]

router = APIRouter()
router.include_router(tasks.router)
router.include_router(tokens.router)
router.include_router(dashboard.router)
OPEN_BODIES = dashboard.OPEN_BODIES
"""The dashboard's login form is posted before the visitor has a token."""

subscribers: EventSubscribers[Engine] = EventSubscribers(IDENTITY, produces=(TaskCreated,))


@subscribers.handler(*EVENT_TYPES.values())
async def on_event(events: Sequence[CloudEvent[Any]], engine: Engine) -> None:
    """Append every event to the task timelines (the event log), the batch in one transaction.

    One handler for every type: the log keeps them all, in order.
    """
    await asyncio.to_thread(record_events, engine, events)


def register(runtime: Runtime) -> None:
    subscribers.subscribe(runtime, runtime.engine)
