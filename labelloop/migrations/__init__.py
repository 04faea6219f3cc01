"""Alembic migrations of labelloop's database: SQLite locally, PostgreSQL in a cluster.

:func:`upgrade` brings a database to the newest revision (``labelloop db upgrade``; the Helm
chart runs it in a pre-install/pre-upgrade Job). :func:`revision` writes the next revision from
the models (Alembic's autogenerate against a scratch SQLite database at head), so a model change
comes with its migration; a test fails while the two disagree. ``labelloop serve`` migrates
the database it opens (:func:`prepare`), a database of an older local labelloop included.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, MetaData, create_engine, inspect, text
from sqlmodel import SQLModel

from labelloop.db import file_lock, sqlite_lock_path

log = logging.getLogger(__name__)

MIGRATION_LOCK = 0x6C6C6D67
"""PostgreSQL advisory lock key held while a process migrates ("llmg")."""

MIGRATIONS_DIR = Path(__file__).resolve().parent

CORE_MODEL_MODULES = (
    "labelloop.tasks",
    "labelloop.timeline",
    "labelloop.messaging.outbox",
    "labelloop.auth",
)
"""The common core's tables: tasks, the event log, the outbox and processed-message log, API
tokens."""


def model_modules() -> list[str]:
    """Every module that declares tables: the core's, and each service's ``models`` (from the
    registry of services, :mod:`labelloop.composition`)."""
    from labelloop import composition

    return [*CORE_MODEL_MODULES, *composition.model_modules()]


def target_metadata() -> MetaData:
    """The tables labelloop's model modules declare: what the migrations build.

    Only those: any other SQLModel table that shares the process (a test's probe table, a
    plugin's) stays out of the migrations.
    """
    modules = model_modules()
    for module in modules:
        importlib.import_module(module)
    declared = {
        cls.__table__.name
        for cls in _subclasses(SQLModel)
        if cls.__module__ in modules and hasattr(cls, "__table__")
    }
    metadata = MetaData()
    for name, table in SQLModel.metadata.tables.items():
        if name in declared:
            table.to_metadata(metadata)
    return metadata


def _subclasses(cls: type) -> list[type]:
    found: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def alembic_config(database_url: str) -> Config:
    """A configuration without ``alembic.ini``; the URL travels as an attribute, untouched by
    configparser's ``%`` interpolation (passwords may contain ``%``)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["database_url"] = database_url
    ruff = shutil.which("ruff")
    if ruff:  # new revisions come out lint- and format-clean
        hooks = "post_write_hooks"
        config.set_section_option(hooks, "hooks", "ruff_format, ruff_fix")
        for hook, options in (("ruff_format", "format"), ("ruff_fix", "check --fix")):
            config.set_section_option(hooks, f"{hook}.type", "exec")
            config.set_section_option(hooks, f"{hook}.executable", ruff)
            config.set_section_option(
                hooks, f"{hook}.options", f"{options} REVISION_SCRIPT_FILENAME"
            )
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` to ``revision`` (the newest by default)."""
    command.upgrade(alembic_config(database_url), revision)


def head() -> str | None:
    """The newest revision id."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def revision(message: str) -> Path:
    """Write the next revision: what the models declare beyond the current head."""
    current = head()
    rev_id = f"{int(current) + 1:04d}" if current else "0001"
    with tempfile.TemporaryDirectory(prefix="labelloop-revision-") as scratch:
        config = alembic_config(f"sqlite:///{scratch}/scratch.db")
        command.upgrade(config, "head")
        script = command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic wrote no single revision")
    return Path(script.path)


def prepare(engine: Engine) -> str | None:
    """Bring the database ``labelloop serve`` opens to the newest revision; returns the
    revision it found (None for an empty database).

    Locally the schema used to come from ``create_all`` alone, which adds missing tables but
    never a missing column, so a database made by an older labelloop failed on its first
    query. Now every start migrates, one process at a time (the processes of one machine
    start together): an empty database is built by the migrations, a migrated one upgraded,
    and one made by ``create_all`` without a revision (an older local database) is stamped
    with the newest revision whose schema it holds, then upgraded.
    """
    with _migration_lock(engine):
        found = _current_revision(engine)
        if found is None and _has_labelloop_tables(engine):
            found = _revision_of_schema(engine)
            log.warning("database without a revision holds revision %s's schema", found)
            command.stamp(alembic_config(_url(engine)), found)
        if found is not None and not _known(found):
            # a newer labelloop migrated it (a rollback, or an old pod restarting during a
            # rolling upgrade): its schema is ahead of these models, never downgraded here
            log.warning("database at revision %s, unknown to this labelloop: left as it is", found)
        elif found != _scripts().get_current_head():
            upgrade(_url(engine))
        return found


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    """The revisions this labelloop ships, read once per process (start-up reads them at
    every decision otherwise; :func:`revision` writes new ones and reads them afresh)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def _known(revision: str) -> bool:
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _has_labelloop_tables(engine: Engine) -> bool:
    return bool(set(inspect(engine).get_table_names()) & set(target_metadata().tables))


def _columns(engine: Engine) -> set[tuple[str, str]]:
    found = inspect(engine)
    return {
        (table, column["name"])
        for table in found.get_table_names()
        if table != "alembic_version"
        for column in found.get_columns(table)
    }


def _revision_of_schema(engine: Engine) -> str:
    """The newest revision whose columns the database has, in every table it has.

    Tables it lacks do not count (``create_all`` of the models a process imported makes only
    those; the rest are created after): a database holding some tables, each as the newest
    revision has it, is at the newest revision.
    """
    present = _columns(engine)
    tables = {table for table, _ in present}

    def holds(columns: set[tuple[str, str]]) -> bool:
        return {pair for pair in columns if pair[0] in tables} <= present

    if holds(
        {
            (table.name, column.name)
            for table in target_metadata().tables.values()
            for column in table.columns
        }
    ):
        return _scripts().get_current_head() or "head"
    scripts = _scripts()
    with tempfile.TemporaryDirectory(prefix="labelloop-schema-") as scratch:
        for script in scripts.walk_revisions():  # newest first
            if script.revision == scripts.get_current_head():
                continue
            url = f"sqlite:///{scratch}/{script.revision}.db"
            upgrade(url, script.revision)
            scratch_engine = create_engine(url)
            try:
                if holds(_columns(scratch_engine)):
                    return str(script.revision)
            finally:
                scratch_engine.dispose()
    raise RuntimeError(
        "the database holds labelloop tables of no known revision; "
        "migrate it with `labelloop db upgrade` or remove it"
    )


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """One migrating process at a time: PostgreSQL's advisory lock, or a file lock beside a
    SQLite database (its processes share one machine)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()
        return
    path = sqlite_lock_path(engine, "migrate")
    if path is None:
        yield
        return
    with file_lock(path):
        yield
