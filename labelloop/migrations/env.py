"""Alembic's environment: migrates the database ``labelloop.migrations`` hands it."""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.types import TypeDecorator
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

from labelloop.db import get_engine
from labelloop.migrations import target_metadata


def _render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write SQLModel's column types as the SQLAlchemy types they store as, so that revisions
    depend on SQLAlchemy alone (an unknown SQLModel type gets its import instead)."""
    if kind != "type":
        return False
    if isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length else "sa.String()"
    if isinstance(item, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if isinstance(item, TypeDecorator) and type(item).__module__.startswith("sqlmodel"):
        autogen_context.imports.add("import sqlmodel")
    return False


def _database_url() -> str:
    url = context.config.attributes.get("database_url")
    if url:
        return str(url)
    from labelloop.config import get_settings

    return get_settings().database_url


OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata(),
    "compare_type": True,
    # SQLite alters tables by copying them; batch operations do that and are plain ALTERs on
    # PostgreSQL, so one revision serves both.
    "render_as_batch": True,
    "render_item": _render_item,
}


def run_offline() -> None:
    context.configure(url=_database_url(), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with get_engine(_database_url()).connect() as connection:
        context.configure(connection=connection, **OPTIONS)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
