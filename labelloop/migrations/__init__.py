"""Alembic migrations of labelloop's database: SQLite locally, PostgreSQL in a cluster.

:func:`upgrade` brings a database to the newest revision (``labelloop db upgrade``; the Helm
chart runs it in a pre-install/pre-upgrade Job). :func:`revision` writes the next revision from
the models (Alembic's autogenerate against a scratch SQLite database at head), so a model change
comes with its migration; a test fails while the two disagree. ``labelloop serve`` still
``create_all``'s missing tables for local use (``labelloop.runtime.prepare_database``).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlmodel import SQLModel

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
    """Every module that declares tables: the core's, and each service's ``models``."""
    from labelloop.runtime import SERVICE_MODULES

    modules = list(CORE_MODEL_MODULES)
    for app_module in SERVICE_MODULES.values():
        candidate = app_module.rsplit(".", 1)[0] + ".models"
        if importlib.util.find_spec(candidate) is not None:
            modules.append(candidate)
    return modules


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
