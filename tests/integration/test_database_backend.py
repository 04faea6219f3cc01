"""The suite runs on the database it was asked for (``LABELLOOP_TEST_DATABASE``)."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.integration.harness import ApiServer

pytestmark = pytest.mark.integration


def test_the_suite_uses_the_requested_database(engine: Engine, api: ApiServer) -> None:
    wanted = os.environ.get("LABELLOOP_TEST_DATABASE", "sqlite")
    assert engine.dialect.name == wanted
    assert api.settings.database_url.startswith(wanted)
    with engine.connect() as connection:
        tables = connection.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_name = 'tasks'")
            if wanted == "postgresql"
            else text("SELECT count(*) FROM sqlite_master WHERE name = 'tasks'")
        ).scalar_one()
    assert tables == 1
