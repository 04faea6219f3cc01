"""The real local stack (Kafka, MinIO, Triton), started once per test run.

If this checkout's test stack is already up (a previous run left it, or a developer started
it with the same settings) it is reused; whatever this run started, it stops at the end. A
server on its ports that this checkout did not start is refused: the fault tests stop and
restart the servers, and another's they cannot.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.stack.base import free_port
from labelloop.stack.manager import Stack
from labelloop.storage import ObjectStore
from tests.integration.harness import ApiServer, WebhookReceiver
from tests.integration.label_studio import LabelStudioServer
from tests.integration.postgres import PostgresServer


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, with_triton=True)
    already_up = all(status.healthy and status.pid is not None for status in stack.status())
    if not already_up:
        stack.down(progress=lambda line: None)  # leftovers of an interrupted run
        for name in ("kafka", stack.s3.name):  # a fresh broker and store for every run
            shutil.rmtree(settings.var_dir / name, ignore_errors=True)
    stack.up(progress=lambda line: print(f"[stack] {line}"), adopt_foreign=False)
    yield stack
    if not already_up:
        stack.down(progress=lambda line: print(f"[stack] {line}"))


@pytest.fixture(scope="session")
def store(stack: Stack, settings: Settings) -> ObjectStore:
    return ObjectStore.from_settings(settings)


@pytest.fixture
def unique() -> str:
    """A fresh suffix for topics, task ids and groups, so tests never see each other's data."""
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    """A PostgreSQL server when ``LABELLOOP_TEST_DATABASE=postgresql``, else None (SQLite)."""
    if os.environ.get("LABELLOOP_TEST_DATABASE", "sqlite") != "postgresql":
        yield None
        return
    server = PostgresServer(
        Path("var/test-pg").resolve(), port=int(os.environ["LABELLOOP_TEST_PG_PORT"])
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def new_database_url(
    postgres: PostgresServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], str]:
    """Makes a fresh, empty database: SQLite files, or PostgreSQL databases."""

    def make() -> str:
        if postgres is not None:
            return postgres.new_database()
        return f"sqlite:///{tmp_path_factory.mktemp('db')}/labelloop.db"

    return make


@pytest.fixture
def database_url(new_database_url: Callable[[], str]) -> str:
    return new_database_url()


@pytest.fixture
def engine(database_url: str) -> Engine:
    engine = get_engine(database_url)
    create_tables(engine)
    return engine


@pytest.fixture
async def test_settings(settings: Settings, unique: str) -> AsyncIterator[Settings]:
    """Settings whose topics carry a prefix of their own (``t<unique>.ingest.events``…)."""
    yield settings.model_copy(update={"kafka_topic_prefix": f"t{unique}."})


@pytest.fixture(scope="session")
def label_studio_port() -> int:
    """The port a Label Studio of the tests listens on (the api names it as its one origin)."""
    return free_port()


@pytest.fixture(scope="session")
def label_studio(
    label_studio_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabelStudioServer]:
    """A real Label Studio, started once for the tests that use it."""
    server = LabelStudioServer(label_studio_port, tmp_path_factory.mktemp("label-studio"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api(
    stack: Stack, settings: Settings, new_database_url: Callable[[], str], label_studio_port: int
) -> Iterator[ApiServer]:
    """All services in one process on the real stack, with a database of this run's own."""
    server = ApiServer(
        settings.model_copy(
            update={
                "database_url": new_database_url(),
                "label_studio_urls": f"http://127.0.0.1:{label_studio_port}",
            }
        )
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(api: ApiServer) -> Iterator[LabelloopClient]:
    with LabelloopClient(api.url, api.settings.admin_token) as labelloop:
        yield labelloop


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()
