"""Revision 0006 moves each manifest from a JSON column to rows, on SQLite and PostgreSQL
(the integration suite runs once on each), and back on a downgrade."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import JSON, bindparam, text

from labelloop.db import get_engine
from labelloop.migrations import alembic_config, upgrade

pytestmark = pytest.mark.integration

MANIFEST = [
    {"name": "b.jpg", "sha256": "ab" * 32},
    {"name": "a.jpg", "sha256": None},
    {"name": "c.jpg"},
]


def test_manifests_become_rows_in_their_order_and_come_back(
    new_database_url: Callable[[], str],
) -> None:
    url = new_database_url()
    upgrade(url, "0005")
    engine = get_engine(url)
    insert = text(
        "INSERT INTO task_ingest (task_id, manifest, frames_seen) VALUES (:task, :manifest, 0)"
    ).bindparams(bindparam("manifest", type_=JSON))
    with engine.begin() as connection:
        connection.execute(insert, {"task": "t1", "manifest": MANIFEST})
        connection.execute(insert, {"task": "t2", "manifest": None})
    upgrade(url)
    with engine.connect() as connection:
        entries = connection.execute(
            text("SELECT task_id, name, position, sha256 FROM manifest_entries ORDER BY position")
        ).all()
        counts = connection.execute(text("SELECT task_id, declared FROM task_ingest")).all()
    declared = {task_id: count for task_id, count in counts}
    assert [tuple(row) for row in entries] == [
        ("t1", "b.jpg", 0, "ab" * 32),
        ("t1", "a.jpg", 1, None),
        ("t1", "c.jpg", 2, None),
    ]
    assert declared == {"t1": 3, "t2": None}

    command.downgrade(alembic_config(url), "0005")
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT task_id, manifest FROM task_ingest ORDER BY task_id").columns(
                manifest=JSON
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        (
            "t1",
            [
                {"name": n, "sha256": h}
                for n, h in (("b.jpg", "ab" * 32), ("a.jpg", None), ("c.jpg", None))
            ],
        ),
        ("t2", None),
    ]
    engine.dispose()
