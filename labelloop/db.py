"""The database: one SQLAlchemy engine per URL, SQLite by default, PostgreSQL by URL."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session, SQLModel, col, create_engine, select

T = TypeVar("T")


@lru_cache
def get_engine(url: str) -> Engine:
    """The engine for ``url``, created once per process and URL.

    SQLite runs in WAL mode with a busy timeout so the API and the consumers of one process
    (and the CLI beside them) can write without "database is locked" failures.
    """
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(_sqlalchemy_url(url), pool_pre_ping=True)


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name one database, however they are written: a SQLite file by its
    real path, a PostgreSQL database by name, port and the addresses its host resolves to."""
    a, b = (make_url(_sqlalchemy_url(url)) for url in (first, second))
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        paths = [url.database or "" for url in (a, b)]
        if any(path in {"", ":memory:"} for path in paths):
            return False  # in-memory databases are never another process's
        return os.path.realpath(paths[0]) == os.path.realpath(paths[1])
    if a.database != b.database or (a.port or 5432) != (b.port or 5432):
        return False
    return bool(_addresses(a.host) & _addresses(b.host))


def _addresses(host: str | None) -> set[str]:
    name = host or "localhost"
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(name, None)} | {name.lower()}
    except OSError:
        return {name.lower()}


def _sqlalchemy_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        # The plain form (CloudNativePG's `uri`, most docs) means psycopg2 to SQLAlchemy;
        # labelloop ships psycopg 3.
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create every table the imported models declare (idempotent).

    Processes started together (one per service) race to create the same tables: the loser's
    ``CREATE TABLE`` fails with "already exists", and trying again finds them made.
    """
    for attempt in range(attempts):
        try:
            SQLModel.metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


MAX_IN_LIST = 1000
"""Values per ``IN (...)`` list: a query's parameter count never grows with a task's size
(PostgreSQL refuses more than 65,535 parameters in one statement)."""


def in_chunks(values: Iterable[T], size: int = MAX_IN_LIST) -> Iterator[list[T]]:
    """``values`` in lists of at most ``size``, for one ``IN`` query each."""
    chunk: list[T] = []
    for value in values:
        chunk.append(value)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


ModelT = TypeVar("ModelT", bound=SQLModel)


def rows_in(
    session: Session, model: type[ModelT], column: Any, keys: Iterable[object], *where: Any
) -> list[ModelT]:
    """The rows of ``model`` whose ``column`` is one of ``keys`` (and ``where``), one query per
    :data:`MAX_IN_LIST` keys: a batch's lookup, however big the batch."""
    return [
        row
        for chunk in in_chunks(keys)
        for row in session.exec(select(model).where(*where, col(column).in_(chunk)))
    ]


def sqlite_lock_path(engine: Engine, name: str) -> str | None:
    """The lock file ``<database>.<name>-lock`` beside a SQLite database file, whose processes
    share one machine; None for other databases and in-memory ones (nothing to share)."""
    if engine.dialect.name != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{os.path.abspath(database)}.{name}-lock"


@contextmanager
def file_lock(path: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold ``path``'s advisory lock for the block. ``wait=False``: yields False at once when
    another process holds it (the block then runs without it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
