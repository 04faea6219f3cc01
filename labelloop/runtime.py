"""What a running labelloop process holds: settings, database, broker, outbox relay, store.

``labelloop serve`` builds one :class:`Runtime` and lets each selected service (a
:class:`Service`, listed in :mod:`labelloop.composition`) register its subscribers, router and
background loops on it: all services in one process locally, one service per process (pod) in
a cluster, with the same handlers.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from fastapi import APIRouter
from faststream.kafka import KafkaBroker
from sqlalchemy.engine import Engine

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.identity import ServiceIdentity
from labelloop.messaging.broker import create_broker, kafka_publisher
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.relay import OutboxRelay
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.storage import ObjectStore

BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    broker: KafkaBroker
    relay: OutboxRelay
    transactions: Transactions
    background: list[BackgroundLoop] = field(default_factory=list)
    parts: dict[str, Any] = field(default_factory=dict)
    """What a service builds once per process and shares between its handlers and its routes
    (labeler-assist's model server: one per process, not one each)."""

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings)

    async def close(self) -> None:
        """Release what the services opened (the store's connections, if it was used)."""
        if "store" in self.__dict__:
            await self.store.aclose()


def create_runtime(settings: Settings, *, client_id: str) -> Runtime:
    engine = get_engine(settings.database_url)
    broker = create_broker(settings, client_id=client_id)
    relay = OutboxRelay(engine, kafka_publisher(broker), poll_s=settings.outbox_poll_s)
    transactions = Transactions(
        engine, settings.topic, on_commit=relay.wake, max_event_bytes=settings.event_max_bytes
    )
    runtime = Runtime(settings, engine, broker, relay, transactions)
    runtime.background.append(relay.run)
    return runtime


class Service(Protocol):
    """What a service module (``<package>.app``) exposes; :mod:`labelloop.composition` lists
    them."""

    IDENTITY: ServiceIdentity
    subscribers: EventSubscribers[Any]
    """Its typed handlers (what it consumes) and the event types it produces."""
    router: APIRouter

    def register(self, runtime: Runtime) -> None:
        """Build its dependencies, subscribe its handlers, add its background loops."""


def prepare_database(runtime: Runtime) -> None:
    """Migrate the database to the newest revision (a no-op where the chart's migration Job
    did it), then create any table outside the migrations that a loaded model declares."""
    from labelloop.migrations import prepare

    prepare(runtime.engine)
    create_tables(runtime.engine)
