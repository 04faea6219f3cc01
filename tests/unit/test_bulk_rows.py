"""The bulk helpers a replay's batches go through (issue 16: replay at 10,000 events/s): rows
inserted on the driver are stored exactly as SQLAlchemy stores them, existence checks find
what a query finds, and a replay hands its database back with the settings it found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ingest.models import Frame
from labeler_assist.models import Annotation
from labelloop.bulk import found_keys, insert_rows
from labelloop.composition import projections
from labelloop.db import MAX_IN_LIST, get_engine
from labelloop.migrations import upgrade
from labelloop.replay import _rebuilding
from labelloop.timeline import EventRecord

LATER = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))


def database(tmp_path: Path, name: str) -> Engine:
    projections()  # every service's models
    url = f"sqlite:///{tmp_path}/{name}.db"
    upgrade(url)
    return get_engine(url)


def annotation_rows(count: int) -> list[dict[str, Any]]:
    """Rows with JSON, times in another zone, quotes and text that is not ASCII."""
    return [
        {
            "task_id": "t",
            "frame": f'f{index}\'s "frame" é.jpg',
            "job_id": "j",
            "boxes": [{"label": "car", "x": 0.1 * index, "y": 2, "w": 3.5, "h": 4}],
            "submitted_by": "ana",
            "updated_at": LATER + timedelta(seconds=index),
        }
        for index in range(count)
    ]


def stored(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    """The values as the database holds them (no type processing on the way out)."""
    with engine.connect() as connection:
        return sorted(connection.exec_driver_sql(f"SELECT * FROM {table}").all())


def test_driver_inserts_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    bulk, core = database(tmp_path, "bulk"), database(tmp_path, "core")
    rows = annotation_rows(5)
    with Session(bulk) as session:
        insert_rows(session, Annotation, rows)
        session.commit()
    with Session(core) as session:
        session.execute(insert(Annotation.__table__), rows)  # type: ignore[attr-defined]
        session.commit()
    assert stored(bulk, "annotations") == stored(core, "annotations")
    assert len(stored(bulk, "annotations")) == 5


def test_rows_without_a_defaulted_column_get_its_default(tmp_path: Path) -> None:
    engine = database(tmp_path, "defaults")
    rows = [{k: v for k, v in row.items() if k != "updated_at"} for row in annotation_rows(2)]
    before = datetime.now(UTC)
    with Session(engine) as session:
        insert_rows(session, Annotation, rows)  # through SQLAlchemy, which fills it in
        session.commit()
        found = session.get(Annotation, ("t", rows[0]["frame"]))
    assert found is not None and found.updated_at.replace(tzinfo=UTC) >= before


def test_a_duplicate_key_is_an_integrity_error(tmp_path: Path) -> None:
    engine = database(tmp_path, "duplicate")
    with Session(engine) as session:
        insert_rows(session, Annotation, annotation_rows(1))
        session.commit()
        with pytest.raises(IntegrityError):
            insert_rows(session, Annotation, annotation_rows(2))
        session.rollback()
    assert len(stored(engine, "annotations")) == 1


def test_found_keys_finds_what_a_query_finds(tmp_path: Path) -> None:
    engine = database(tmp_path, "found")
    names = [f"f{index}.jpg" for index in range(MAX_IN_LIST + 200)]  # two lookups
    with Session(engine) as session:
        for task_id in ("t", "u"):
            rows = [
                {
                    "task_id": task_id,
                    "name": name,
                    "object_key": name,
                    "status": "processed",
                    "processed_at": LATER,
                }
                for name in names[::3]
            ]
            insert_rows(session, Frame, rows)
        session.add(Frame(task_id="t", name="pending.jpg", object_key="k", status="processed"))
        wanted = [*names, "pending.jpg", "absent.jpg"]
        assert found_keys(session, Frame, "name", wanted, task_id="t") == {
            *names[::3],
            "pending.jpg",  # not flushed yet: looked up after a flush, as a query would
        }
        assert found_keys(session, Frame, "name", ["f0.jpg"], task_id="v") == set()
        assert found_keys(session, EventRecord, "event_id", []) == set()


def test_a_replay_hands_the_database_back_as_it_found_it(tmp_path: Path) -> None:
    engine = database(tmp_path, "settings")
    with engine.connect() as connection:
        before = connection.exec_driver_sql("PRAGMA synchronous").scalar_one()
    with _rebuilding(engine) as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == 0  # OFF
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar_one() == before == 1
