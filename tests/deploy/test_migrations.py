"""Alembic's revisions build exactly the schema the models declare."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table
from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.composition import SERVICES
from labelloop.db import get_engine
from labelloop.migrations import alembic_config, head, prepare, target_metadata, upgrade


def _differences(url: str, metadata: MetaData) -> list[Any]:
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
        [sys.executable, "-c", probe, *(entry.app for entry in SERVICES)],
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


def _revision_in(database: Path) -> list[tuple[str]]:
    with sqlite3.connect(database) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchall()


def test_start_up_migrates_a_database_an_older_labelloop_made(tmp_path: Path) -> None:
    """A local database built by ``create_all`` at revision 0003 (no revision recorded, no
    ``outbox.error`` column) is stamped 0003 and upgraded, its rows kept."""
    database = tmp_path / "old.db"
    upgrade(f"sqlite:///{database}", "0003")
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE alembic_version")  # what create_all left: no revision
        connection.execute(
            "INSERT INTO outbox (event_id, event_type, topic, key, payload, headers, created_at)"
            " VALUES ('e1', 't', 'topic', 'k', x'7b7d', '{}', '2026-01-01 00:00:00')"
        )
    engine = get_engine(f"sqlite:///{database}")
    assert prepare(engine) == "0003"
    assert _revision_in(database) == [(head(),)]
    assert _differences(f"sqlite:///{database}", target_metadata()) == []
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT event_id, error FROM outbox").fetchall() == [("e1", None)]


def test_start_up_builds_an_empty_database_and_leaves_a_current_one(tmp_path: Path) -> None:
    database = tmp_path / "new.db"
    engine = get_engine(f"sqlite:///{database}")
    assert prepare(engine) is None
    assert _revision_in(database) == [(head(),)]
    assert prepare(engine) == head()
    # create_all at head without a revision (a test's or an older serve's) is stamped head
    fresh = tmp_path / "create-all.db"
    target_metadata().create_all(get_engine(f"sqlite:///{fresh}"))
    assert prepare(get_engine(f"sqlite:///{fresh}")) == head()
    assert _revision_in(fresh) == [(head(),)]


def test_start_up_refuses_a_schema_of_no_revision(tmp_path: Path) -> None:
    database = tmp_path / "odd.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, odd TEXT)")
    with pytest.raises(RuntimeError, match="no known revision"):
        prepare(get_engine(f"sqlite:///{database}"))


def test_start_up_stamps_a_database_holding_some_tables_at_head(tmp_path: Path) -> None:
    """A test or tool that ``create_all``'s only the models it imported leaves some tables;
    each as the newest revision has it, so the database is at head and the rest are made."""
    database = tmp_path / "some.db"
    some = MetaData()
    for name in ("tasks", "outbox"):
        target_metadata().tables[name].to_metadata(some)
    some.create_all(get_engine(f"sqlite:///{database}"))
    assert prepare(get_engine(f"sqlite:///{database}")) == head()
    assert _revision_in(database) == [(head(),)]


def test_start_up_leaves_a_database_a_newer_labelloop_migrated(tmp_path: Path) -> None:
    """After a rollback (or an old pod restarting mid-upgrade) the database is at a revision
    this code does not know: the service starts and changes nothing."""
    database = tmp_path / "newer.db"
    upgrade(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    assert prepare(get_engine(f"sqlite:///{database}")) == "9999"
    assert _revision_in(database) == [("9999",)]
