"""The ``api`` service: tasks, and the event-log projection behind timelines and SSE."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import Session

from labelloop.api import tasks, tokens
from labelloop.messaging.broker import consumer_options
from labelloop.runtime import Runtime
from labelloop.timeline import record_event
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
    topics = [runtime.settings.topic(topic) for topic in TOPICS]

    @runtime.broker.subscriber(
        *topics, **consumer_options(runtime.settings, CONSUMER_GROUP), title="timeline"
    )
    async def on_event(event: AnyEvent) -> None:  # type: ignore[valid-type]
        with Session(runtime.engine) as session:
            record_event(session, event)
