"""What a running labelloop process holds: settings, database, broker, outbox relay, store.

``labelloop serve`` builds one :class:`Runtime` and lets each selected service register its
subscribers, router and background loops on it: all services in one process locally, one
service per process (pod) in a cluster, with the same handlers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from fastapi import APIRouter
from faststream.kafka import KafkaBroker
from sqlalchemy.engine import Engine

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.broker import create_broker, kafka_publisher
from labelloop.messaging.outbox import OutboxRelay, Transactions
from labelloop.storage import ObjectStore
from schemas.topics import Topic

BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    broker: KafkaBroker
    relay: OutboxRelay
    transactions: Transactions
    background: list[BackgroundLoop] = field(default_factory=list)

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore.from_settings(self.settings)


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
    """What a service module (``<package>.app``) exposes."""

    NAME: str
    CONSUMER_GROUP: str
    TOPICS: tuple[Topic, ...]
    """What it consumes (empty for none)."""
    router: APIRouter

    def register(self, runtime: Runtime) -> None: ...


SERVICE_MODULES = {
    "api": "labelloop.api.service",
    "ingest": "ingest.app",
    "jobgen": "jobgen.app",
    "webhooks": "webhooks.app",
    "labeler-assist": "labeler_assist.app",
    "trainer": "trainer.app",
}
"""Service name → module; imported lazily so a pod loads only its own service's dependencies."""


def load_service(name: str) -> Service:
    try:
        module_name = SERVICE_MODULES[name]
    except KeyError:
        known = ", ".join(SERVICE_MODULES)
        raise ValueError(f"unknown service {name!r} (known: {known})") from None
    module: Service = importlib.import_module(module_name)
    return module


def prepare_database(runtime: Runtime) -> None:
    """Migrate the database to the newest revision (a no-op where the chart's migration Job
    did it), then create any table outside the migrations that a loaded model declares."""
    from labelloop.migrations import prepare

    prepare(runtime.engine)
    create_tables(runtime.engine)
