"""Compare a replayed database with the live one, table by table, for the tasks of a test."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from labelloop.composition import projections
from labelloop.db import get_engine
from labelloop.messaging.outbox import OutboxMessage
from labelloop.replay import projected_tables, unreplayed_columns
from labelloop.timeline import EventRecord
from tests.integration.harness import wait_until


def _owned(table: Table, task_ids: set[str], subscription_ids: set[str]) -> Any:
    if table.name == "tasks":
        return table.c.id.in_(task_ids)
    if table.name == "webhook_subscriptions":
        return table.c.id.in_(subscription_ids)
    if table.name == "event_log":
        return table.c.task_id.in_(task_ids) | table.c.subject.in_(subscription_ids)
    return table.c.task_id.in_(task_ids)


def projection_rows(
    engine: Engine, task_ids: Iterable[str], subscription_ids: Iterable[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """Each projected table's rows of these tasks and subscriptions, minus the columns a
    replay does not reproduce, in a stable order."""
    tasks, subscriptions = set(task_ids), set(subscription_ids)
    rows: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as connection:
        for name in projected_tables(projections()):
            table = Table(name, MetaData(), autoload_with=connection)
            skipped = set(unreplayed_columns(projections()).get(name, ()))
            found = [
                {k: v for k, v in row._mapping.items() if k not in skipped}
                for row in connection.execute(
                    table.select().where(_owned(table, tasks, subscriptions))
                )
            ]
            rows[name] = sorted(found, key=lambda row: json.dumps(row, default=str))
    return rows


SIDE_EFFECT_TABLES = ("webhook_deliveries", "outbox", "training_requests", "served_models")
"""What running the services would fill: deliveries to send, events to publish, runs to train,
models to load. A replay must leave them empty."""


def side_effects(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            name: len(
                connection.execute(Table(name, MetaData(), autoload_with=connection).select()).all()
            )
            for name in SIDE_EFFECT_TABLES
        }


def wait_quiet(engine: Engine, task_ids: Iterable[str], timeout_s: float = 60) -> None:
    """Until every event these tasks recorded is published and in the live event log."""
    tasks = list(task_ids)

    def settled() -> bool:
        with Session(engine) as session:
            unsent = session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(col(OutboxMessage.published_at).is_(None))
            ).one()
            recorded = set(
                session.exec(
                    select(OutboxMessage.event_id).where(col(OutboxMessage.key).in_(tasks))
                ).all()
            )
            logged = set(
                session.exec(
                    select(EventRecord.event_id).where(col(EventRecord.task_id).in_(tasks))
                ).all()
            )
        return unsent == 0 and recorded <= logged

    assert wait_until(settled, timeout_s=timeout_s, interval_s=0.5), "the live system never settled"


def run_replay(into: str, since: datetime, until: datetime) -> dict[str, Any]:
    """``labelloop replay`` as a user runs it, in its own process; its JSON counts."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelloop",
            "replay",
            "--since",
            since.isoformat(),
            "--until",
            until.isoformat(),
            "--into",
            into,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return counts


def assert_replay_matches(
    live_url: str,
    new_database_url: Callable[[], str],
    since: datetime,
    task_ids: Iterable[str],
    subscription_ids: Iterable[str] = (),
) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """Replay twice into one fresh database and once into another; each equals the live rows.

    Returns the live rows compared and the first replayed database's URL.
    """
    tasks, subscriptions = list(task_ids), list(subscription_ids)
    live = projection_rows(get_engine(live_url), tasks, subscriptions)
    assert live["tasks"] and live["event_log"], "nothing to compare"
    first_url, second_url = new_database_url(), new_database_url()
    # One window for every replay: other tests' work (a training run) may still be publishing.
    until = datetime.now(UTC)
    first = run_replay(first_url, since, until)
    assert first["applied"] > 0 and first["records"] >= first["applied"]
    again = run_replay(first_url, since, until)
    assert again["applied"] == 0, "a second replay into the same database changes nothing"
    run_replay(second_url, since, until)
    for url in (first_url, second_url):
        replayed = projection_rows(get_engine(url), tasks, subscriptions)
        for table, rows in live.items():
            assert replayed[table] == rows, f"{table} differs after replay"
        assert side_effects(get_engine(url)) == {table: 0 for table in SIDE_EFFECT_TABLES}
    return live, first_url
