"""Alembic's revisions build exactly the schema the models declare."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table
from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.db import get_engine
from labelloop.migrations import alembic_config, head, target_metadata, upgrade
from labelloop.runtime import SERVICE_MODULES


def _differences(url: str, metadata: MetaData) -> list[object]:
    with get_engine(url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_builds_what_the_models_declare(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    upgrade(url)
    assert _differences(url, target_metadata()) == []
    # The comparison is not blind: a table the migrations lack shows up.
    extra = MetaData()
    for table in target_metadata().tables.values():
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    diffs = _differences(url, extra)
    assert [diff[0] for diff in diffs] == ["add_table"]


def test_revisions_render_postgresql_ddl() -> None:
    """Offline (no server): the same revisions as PostgreSQL DDL, for every table."""
    config = alembic_config("postgresql+psycopg://labelloop:p%40ss@db:5432/labelloop")
    config.output_buffer = io.StringIO()
    command.upgrade(config, "head", sql=True)
    ddl = config.output_buffer.getvalue()
    created = set(re.findall(r"^CREATE TABLE (\w+) \(", ddl, re.MULTILINE))
    assert created == set(target_metadata().tables) | {"alembic_version"}
    assert "TIMESTAMP WITH TIME ZONE" in ddl and "BYTEA" in ddl and "SERIAL" in ddl
    # the newest revision is recorded: inserted by the first, updated by each later one
    head_recorded = rf"VALUES \('{head()}'\);|SET version_num='{head()}' WHERE"
    assert re.search(head_recorded, ddl)


def test_upgrade_is_idempotent_and_records_its_revision(tmp_path: Path) -> None:
    database = tmp_path / "twice.db"
    url = f"sqlite:///{database}"
    upgrade(url)
    upgrade(url)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head(),)
        ]


def test_cli_upgrade(tmp_path: Path) -> None:
    database = tmp_path / "cli.db"
    result = CliRunner().invoke(app, ["db", "upgrade", "--database-url", f"sqlite:///{database}"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"tasks", "frames", "jobs", "outbox", "training_requests", "alembic_version"} <= tables


def test_migrations_cover_every_table_the_services_create() -> None:
    """The tables ``labelloop serve`` create_all's (all services loaded) are the migrated ones."""
    probe = (
        "import importlib, json, sys; from sqlmodel import SQLModel; "
        "[importlib.import_module(m) for m in sys.argv[1:]]; "
        "print(json.dumps(sorted(SQLModel.metadata.tables)))"
    )
    served = subprocess.run(
        [sys.executable, "-c", probe, *SERVICE_MODULES.values()],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    migrated = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from labelloop.migrations import target_metadata; "
            "print(json.dumps(sorted(target_metadata().tables)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    served_tables = json.loads(served.stdout)
    assert served_tables, "the services declare tables"
    assert json.loads(migrated.stdout) == served_tables
