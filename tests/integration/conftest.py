"""The real local stack (Kafka, MinIO, Triton), started once per test run.

If the test stack is already up (a previous run left it, or a developer started it with the
same settings) it is reused; whatever this run started, it stops at the end.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.stack.manager import Stack
from labelloop.storage import ObjectStore
from tests.integration.harness import ApiServer, WebhookReceiver


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    stack = Stack(settings, with_triton=True)
    already_up = all(status.healthy for status in stack.status())
    if not already_up:
        stack.down(progress=lambda line: None)  # leftovers of an interrupted run
        for name in ("kafka", "minio"):  # a fresh broker and store for every run
            shutil.rmtree(settings.var_dir / name, ignore_errors=True)
    stack.up(progress=lambda line: print(f"[stack] {line}"))
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


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/test.db")
    create_tables(engine)
    return engine


@pytest.fixture
async def test_settings(settings: Settings, unique: str) -> AsyncIterator[Settings]:
    """Settings whose topics carry a prefix of their own (``t<unique>.ingest.events``…)."""
    yield settings.model_copy(update={"kafka_topic_prefix": f"t{unique}."})


@pytest.fixture(scope="session")
def api(
    stack: Stack, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """All services in one process on the real stack, with a database of this run's own."""
    database = tmp_path_factory.mktemp("api") / "labelloop.db"
    server = ApiServer(settings.model_copy(update={"database_url": f"sqlite:///{database}"}))
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
