"""Rows in bulk: inserts and lookups of thousands of rows in one driver call.

A batch consumer and a replay write and look up rows by the thousand; SQLAlchemy's per-row
work (a parameter dict per row, ``IN`` lists expanded value by value, ORM objects) costs more
than the database does. These build each statement once per table and column set and hand the
values to the driver, converted as the ORM would convert them, so stored values are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, Numeric, String, Table, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, SQLModel

from labelloop.db import in_chunks, rows_in

ModelT = TypeVar("ModelT", bound=SQLModel)


def insert_rows(session: Session, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    """Insert rows known to be new, in order, in one driver call: ``executemany`` on SQLite,
    ``COPY`` on PostgreSQL.

    SQLAlchemy's executemany costs more per row than the database does (a parameter dict per
    row, every value through the column types in Python). Here the statement is built once per
    table and column set, and each value goes through the bind processor the ORM would use, so
    the stored values are the same. Rows name the same columns; rows that leave out a column
    with a Python-side default (or name an unknown one) go through SQLAlchemy, which fills it
    in (or refuses). Pending ORM changes are flushed first, so statement order is kept; driver
    errors come as SQLAlchemy's (a duplicate key is an ``IntegrityError`` either way)."""
    if not rows:
        return
    session.flush()
    connection = session.connection()
    table: Table = model.__table__  # type: ignore[attr-defined]
    plan = _insert_plan(table, connection.dialect, tuple(rows[0]))
    if plan is None:
        connection.execute(insert(table), rows)
    elif plan.copy is not None:
        _copy(connection, plan.copy, plan.parameters(rows))
    else:
        connection.exec_driver_sql(plan.sql, plan.parameters(rows))


def _copy(connection: Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """``COPY ... FROM STDIN`` of ``rows`` on the session's own connection and transaction."""
    driver: Any = connection.connection.dbapi_connection  # psycopg's
    dbapi_error: type[Exception] = connection.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for values in rows:
                copy.write_row(values)
    except dbapi_error as error:
        raise DBAPIError.instance(
            statement, None, error, dbapi_error, dialect=connection.dialect
        ) from error


def found_keys(
    session: Session, model: type[SQLModel], column: str, keys: Iterable[Any], **where: Any
) -> set[Any]:
    """Which of ``keys`` the ``column`` of ``model``'s rows holds, among the rows whose
    ``where`` columns equal the values given: a batch's existence check.

    Written for the driver, one statement per :data:`~labelloop.db.MAX_IN_LIST` keys:
    SQLAlchemy would build ORM objects and expand the ``IN`` list value by value, and on
    PostgreSQL a list of markers is a new statement each time (``= ANY`` of one array is one).
    The columns are text or integers (their values go to the driver as they are). Pending ORM
    changes are flushed first when the session autoflushes, as a query would."""
    if session.autoflush:
        session.flush()
    connection = session.connection()
    table: Table = model.__table__  # type: ignore[attr-defined]
    array = connection.dialect.name == "postgresql"
    found: set[Any] = set()
    for chunk in in_chunks(keys):
        sql = _lookup_sql(
            table, connection.dialect, column, tuple(where), 0 if array else len(chunk)
        )
        values = (*where.values(), chunk) if array else (*where.values(), *chunk)
        found.update(connection.exec_driver_sql(sql, values).scalars())
    return found


@lru_cache(maxsize=256)
def _lookup_sql(
    table: Table, dialect: Dialect, column: str, where: tuple[str, ...], count: int
) -> str:
    """:func:`found_keys`' statement: ``count`` markers, or one array when ``count`` is 0."""
    quote = dialect.identifier_preparer
    marker = parameter_marker(dialect)
    name = quote.quote(table.columns[column].name)
    conditions = "".join(f"{quote.quote(other)} = {marker} AND " for other in where)
    keys = f"IN ({', '.join([marker] * count)})" if count else f"= ANY({marker})"
    source = quote.format_table(table)
    return f"SELECT {name} FROM {source} WHERE {conditions}{name} {keys}"  # noqa: S608 - quoted names, bound values


def stored_rows(
    session: Session, model: type[ModelT], column: str, keys: Iterable[Any], **where: Any
) -> list[ModelT]:
    """The rows of ``model`` whose ``column`` is one of ``keys`` (and whose ``where`` columns
    equal the values given), as objects to change: :func:`found_keys` first, so a batch of new
    rows (what a replay mostly applies) loads no object at all."""
    found = found_keys(session, model, column, keys, **where)
    if not found:
        return []
    conditions = [getattr(model, name) == value for name, value in where.items()]
    return rows_in(session, model, getattr(model, column), found, *conditions)


def parameter_marker(dialect: Dialect) -> str:
    """The driver's positional parameter marker (labelloop ships sqlite3 and psycopg)."""
    if dialect.paramstyle == "qmark":
        return "?"
    if dialect.paramstyle in {"format", "pyformat"}:
        return "%s"
    raise NotImplementedError(f"parameter style {dialect.paramstyle!r}")


@dataclass(frozen=True)
class _InsertPlan:
    sql: str
    copy: str | None
    """The ``COPY`` that loads the same columns, where the driver takes one (PostgreSQL)."""
    values: Callable[[dict[str, Any]], tuple[Any, ...]]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    """(position, bind processor) for the columns whose type converts its values."""

    def parameters(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        values = self.values
        if not self.processors:
            return [values(row) for row in rows]
        converted = []
        for row in rows:
            row_values = list(values(row))
            for position, process in self.processors:
                row_values[position] = process(row_values[position])
            converted.append(tuple(row_values))
        return converted


@lru_cache(maxsize=256)
def _insert_plan(table: Table, dialect: Dialect, names: tuple[str, ...]) -> _InsertPlan | None:
    """The driver-level INSERT of ``names`` into ``table``, or None when SQLAlchemy must build
    it (an unknown column, or a left-out column with a Python-side default to fill in)."""
    columns = table.columns
    if not names or any(name not in columns for name in names):
        return None
    if any(c.default is not None and c.name not in names for c in columns):
        return None
    quote = dialect.identifier_preparer
    target = "{} ({})".format(
        quote.format_table(table), ", ".join(quote.quote(name) for name in names)
    )
    markers = ", ".join([parameter_marker(dialect)] * len(names))
    sql = f"INSERT INTO {target} VALUES ({markers})"  # noqa: S608 - quoted identifiers
    copy = None
    if dialect.name == "postgresql" and all(_copies(columns[name].type) for name in names):
        copy = f"COPY {target} FROM STDIN"
    processors = tuple(
        (position, process)
        for position, name in enumerate(names)
        for process in (columns[name].type.dialect_impl(dialect).bind_processor(dialect),)
        if process is not None
    )
    getter = itemgetter(*names)
    values = getter if len(names) > 1 else lambda row: (getter(row),)
    return _InsertPlan(sql, copy, values, processors)


def _copies(column_type: TypeEngine[Any]) -> bool:
    """Whether ``COPY``'s text form stores a value of this column as an INSERT would: text,
    numbers, booleans, JSON and times with their zone. Not a time without one: the server
    would drop a value's offset where an INSERT converts it to the session's zone."""
    stored = getattr(column_type, "impl_instance", column_type)  # a TypeDecorator's own type
    if isinstance(stored, DateTime):
        return bool(stored.timezone)
    return isinstance(stored, String | Integer | Float | Numeric | Boolean | JSON)
