"""A replay's bulk path builds exactly what applying each event alone builds (issue 16: replay
in bulk). The same history, with duplicates, relabelings and a frame refused after it was
processed, goes event by event into one SQLite database and in uneven batches into another;
every projected table must come out the same."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from labelloop.composition import projections
from labelloop.db import get_engine
from labelloop.migrations import upgrade
from labelloop.replay import EventApplier, projected_tables, unreplayed_columns
from labelloop_tools.bench_consumers import labels_submitted_event
from labelloop_tools.bench_replay import synthetic_history
from schemas.envelope import CloudEvent
from schemas.events import FrameRejected, FrameRejectedData


def history() -> list[CloudEvent[Any]]:
    events: list[CloudEvent[Any]] = []
    for task in range(3):
        task_id = f"r{task}"
        events.extend(synthetic_history(task_id))
        # a later submission relabels frame 3; frame 5 is refused after it was processed
        events.append(labels_submitted_event(3, task_id).model_copy(update={"id": f"re{task}"}))
        events.append(
            FrameRejected.create(
                FrameRejectedData(
                    task_id=task_id,
                    frame="f000005.jpg",
                    object_key=f"tasks/{task_id}/data/f000005.jpg",
                    code="hash_mismatch",
                    reason="sha256 differs from the manifest's",
                ),
                source="/tests",
                key=(task_id, "f000005.jpg"),
                taskid=task_id,
            )
        )
    return events + events[:40]  # a redelivered stretch: duplicates change nothing


def database(tmp_path: Path, name: str) -> Engine:
    url = f"sqlite:///{tmp_path}/{name}.db"
    upgrade(url)
    return get_engine(url)


def contents(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as connection:
        for table in projected_tables(projections()):
            skip = set(unreplayed_columns(projections()).get(table, ()))
            columns = [
                c["name"] for c in inspect(engine).get_columns(table) if c["name"] not in skip
            ]
            rows = connection.execute(text(f"SELECT {', '.join(columns)} FROM {table}"))
            tables[table] = sorted(tuple(str(value) for value in row) for row in rows)
    return tables


def test_batches_build_what_single_events_build(tmp_path: Path) -> None:
    events = history()
    single, batched = database(tmp_path, "single"), database(tmp_path, "batched")
    applier = EventApplier(projections())
    with Session(single) as session:
        applied = [bool(applier.apply_batch(session, [event])) for event in events]
        session.commit()
    new: set[str] = set()
    with Session(batched) as session:
        for start in range(0, len(events), 137):  # uneven batches that split runs
            new |= applier.apply_batch(session, events[start : start + 137])
        session.commit()
    assert len(new) == sum(applied) == len({event.id for event in events})
    expected, found = contents(single), contents(batched)
    assert expected["frames"] and expected["annotations"] and expected["preannotations"]
    assert found == expected
