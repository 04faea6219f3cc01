"""One call records an effect: ``uow.record`` applies the projection registered for the event's
type and records the event for the topic its contract names, in one transaction; a replay of
what was recorded dispatches through the same :class:`Projection` and builds the same rows
(SQLite, no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from ingest import projections as ingest
from ingest.manifest import data_ready_events
from jobgen import projections as jobgen
from jobgen.handlers import handle_data_ready, handle_frames_listed
from labelloop import tasks
from labelloop.audit import task_audit
from labelloop.composition import projections
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.projections import Projection
from labelloop.replay import EventApplier, parse_event
from schemas.envelope import CloudEvent
from schemas.events import (
    FrameProcessed,
    FrameProcessedData,
    FrameRejected,
    FrameRejectedData,
    JobCreated,
    JobCreatedData,
    ObjectsRecovered,
    ObjectsRecoveredData,
    TaskDataReady,
    TaskJobsReadyData,
)
from schemas.topics import NoTopicCarries, Topic, topic_of

TASK = "t-record"


def processed(name: str) -> FrameProcessed:
    return FrameProcessed.create(
        FrameProcessedData(
            task_id=TASK,
            frame=name,
            object_key=f"tasks/{TASK}/data/{name}",
            sha256="0" * 64,
            width=64,
            height=48,
            size_bytes=100,
            format="JPEG",
        ),
        source="/tests",
        key=(TASK, name),
        taskid=TASK,
    )


def rejected(name: str) -> FrameRejected:
    return FrameRejected.create(
        FrameRejectedData(
            task_id=TASK,
            frame=name,
            object_key=f"tasks/{TASK}/data/{name}",
            code="hash_mismatch",
            reason="sha256 differs from the manifest's",
        ),
        source="/tests",
        key=(TASK, name),
        taskid=TASK,
    )


def job(index: int) -> JobCreated:
    job_id = f"{TASK}-j{index:04d}"
    return JobCreated.create(
        JobCreatedData(job_id=job_id, task_id=TASK, start_frame=0, stop_frame=0, frames=["a"]),
        source="/tests",
        key=(job_id,),
        taskid=TASK,
    )


def database(tmp_path: Path, name: str) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/{name}.db")
    create_tables(engine)
    return engine


@pytest.fixture
def transactions(tmp_path: Path) -> Transactions:
    return Transactions(database(tmp_path, "live"), topic_name=lambda topic: f"p.{topic}")


def rows(engine: Engine, table: str) -> list[tuple[str, ...]]:
    columns = [column["name"] for column in inspect(engine).get_columns(table)]
    with engine.connect() as connection:
        found = connection.execute(text(f"SELECT {', '.join(columns)} FROM {table}"))
        return sorted(tuple(str(value) for value in row) for row in found)


def outbox(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        return [
            (message.event_id, message.topic, message.key)
            for message in session.exec(select(OutboxMessage).order_by(col(OutboxMessage.seq)))
        ]


def test_record_applies_the_projection_and_records_for_the_contracts_topic(
    transactions: Transactions,
) -> None:
    event = processed("a.jpg")
    with transactions.bound(ingest.PROJECTION).unit_of_work() as uow:
        assert uow.record(event)
        assert not uow.record(event), "an event is recorded once"
    assert [row[:2] + row[3:4] for row in rows(transactions.engine, "frames")] == [
        (TASK, "a.jpg", "processed")
    ]
    assert outbox(transactions.engine) == [(event.id, "p.ingest.events", TASK)]
    assert topic_of(FrameProcessed.event_type()) is Topic.INGEST_EVENTS


def test_a_rollback_leaves_neither_the_row_nor_the_message(transactions: Transactions) -> None:
    with pytest.raises(RuntimeError), transactions.bound(ingest.PROJECTION).unit_of_work() as uow:
        uow.record(processed("a.jpg"))
        uow.session.flush()  # the row reached the database, inside the transaction
        raise RuntimeError("the handler fails after recording")
    assert rows(transactions.engine, "frames") == []
    assert outbox(transactions.engine) == []


def test_a_type_the_projection_does_not_take_is_only_recorded(transactions: Transactions) -> None:
    recovered = ObjectsRecovered.create(
        ObjectsRecoveredData(task_id=TASK, object_keys=[f"tasks/{TASK}/data/a.jpg"], listed=1),
        source="/tests",
        key=(TASK, "a"),
        taskid=TASK,
    )
    with transactions.bound(ingest.PROJECTION).unit_of_work() as uow:
        assert uow.record(recovered, key="another-key")
    assert rows(transactions.engine, "frames") == []
    assert outbox(transactions.engine) == [(recovered.id, "p.ingest.events", "another-key")]


def test_record_all_calls_each_runs_batch_applier_once(transactions: Transactions) -> None:
    calls: list[tuple[str, list[str]]] = []

    def one(session: Session, event: Any) -> None:
        calls.append(("one", [event.id]))

    def batch(session: Session, events: Any) -> None:
        calls.append(("batch", [event.id for event in events]))

    spy = Projection(
        tables=(),
        appliers={FrameProcessed: one, FrameRejected: one, JobCreated: one},
        batch_appliers={FrameProcessed: batch, FrameRejected: batch},
    )
    a, b, c, first, second = processed("a"), rejected("b"), processed("c"), job(0), job(1)
    ready = data_ready_events(TASK, ["a"], rejected=0)[-1]
    with transactions.bound(spy).unit_of_work() as uow:
        new = uow.record_all([a, b, first, second, ready, c])
    assert calls == [
        ("batch", [a.id, b.id]),
        ("one", [first.id]),
        ("one", [second.id]),
        ("batch", [c.id]),  # a type it does not take (data-ready) is only recorded
    ]
    assert new == [a, b, first, second, ready, c]
    assert [topic for _, topic, _ in outbox(transactions.engine)] == [
        "p.ingest.events",
        "p.ingest.events",
        "p.jobgen.events",
        "p.jobgen.events",
        "p.ingest.events",
        "p.ingest.events",
    ]


def test_record_all_builds_what_single_records_build(tmp_path: Path) -> None:
    events: list[CloudEvent[Any]] = [
        processed("a"),
        processed("b"),
        rejected("b"),
        rejected("c"),
        processed("c"),
    ]
    single = Transactions(database(tmp_path, "single"), projection=ingest.PROJECTION)
    batched = Transactions(database(tmp_path, "batched"), projection=ingest.PROJECTION)
    with single.unit_of_work() as uow:
        assert [uow.record(event) for event in events] == [True] * 5
    with batched.unit_of_work() as uow:
        assert uow.record_all(events) == events
    found = rows(batched.engine, "frames")
    assert [(row[1], row[3]) for row in found] == [
        ("a", "processed"),
        ("b", "rejected"),
        ("c", "rejected"),
    ]
    assert found == rows(single.engine, "frames")
    assert outbox(batched.engine) == outbox(single.engine)


class Stray(CloudEvent[TaskJobsReadyData]):
    type: Literal["io.labelloop.test.stray.v1"] = "io.labelloop.test.stray.v1"


def test_an_event_no_topic_carries_is_refused_before_anything_is_applied(
    transactions: Transactions,
) -> None:
    applied: list[object] = []
    projection = Projection(tables=(), appliers={Stray: lambda _, event: applied.append(event)})
    stray = Stray.create(TaskJobsReadyData(task_id=TASK, job_count=0), source="/t", key=(1,))
    with (
        pytest.raises(NoTopicCarries, match=r"io\.labelloop\.test\.stray\.v1.*EVENTS_BY_TOPIC"),
        transactions.bound(projection).unit_of_work() as uow,
    ):
        uow.record(stray)
    assert applied == [] and outbox(transactions.engine) == []


def test_transactions_bound_to_no_projection_refuse_to_record(transactions: Transactions) -> None:
    with (
        pytest.raises(RuntimeError, match="bound to no projection"),
        transactions.unit_of_work() as uow,
    ):
        uow.record(processed("a.jpg"))
    assert outbox(transactions.engine) == []


def test_replaying_what_the_services_recorded_builds_the_same_rows(
    transactions: Transactions, tmp_path: Path
) -> None:
    """Tasks, ingest and jobgen record as they do live (jobgen through its real handlers, which
    also apply the listing parts they consume); a replay of the outbox into a fresh database
    applies the same events through the same projections."""
    names = [f"f{index}.jpg" for index in range(5)]
    created = tasks.task_created_event(
        tasks.Task(id=TASK, name="t", labels=["car"], segment_size=2, created_by="test")
    )
    with transactions.bound(tasks.PROJECTION).unit_of_work() as uow:
        uow.record(created)
    with transactions.bound(ingest.PROJECTION).unit_of_work("ingest", names) as uow:
        uow.record_all([processed(name) for name in names[:4]])
        uow.record(rejected(names[4]))
        uow.record_all(data_ready_events(TASK, names[:4], rejected=1))
    *listing, ready = data_ready_events(TASK, names[:4], rejected=1)
    jobgen_transactions = transactions.bound(jobgen.PROJECTION)
    handle_frames_listed(listing, jobgen_transactions)  # type: ignore[arg-type]
    assert isinstance(ready, TaskDataReady)
    assert len(handle_data_ready(ready, jobgen_transactions)) == 2

    with Session(transactions.engine) as session:
        payloads = session.exec(select(OutboxMessage.payload).order_by(col(OutboxMessage.seq)))
        events = [parse_event(payload) for payload in payloads]
    applier = EventApplier(projections())  # every service's, as ``labelloop replay`` does
    replayed = database(tmp_path, "replayed")
    with Session(replayed) as session:
        applier.apply_batch(session, [event for event in events if event is not None])
        session.commit()
    for table in ("tasks", "frames", "frame_listings", "jobs"):
        live = rows(transactions.engine, table)
        assert live, f"the live side built no {table}"
        assert rows(replayed, table) == live, table
    # what an auditor reads comes from each service's projection, the same live and replayed
    for engine in (transactions.engine, replayed):
        create_tables(engine)  # the tables of every model projections() imported
    live_audit = task_audit(transactions.engine, TASK, projections())
    assert list(live_audit) == [
        "task",
        "frames",
        "jobs",
        "webhook_deliveries",
        "annotations",
        "preannotations",
        "label_checks",
        "models",
        "unpublished",
        "events",
    ]
    assert len(live_audit["frames"]) == 5 and len(live_audit["jobs"]) == 2
    assert [f["status"] for f in live_audit["frames"]].count("rejected") == 1
    replayed_audit = task_audit(replayed, TASK, projections())
    for section in ("task", "frames", "jobs", "annotations", "models"):
        assert replayed_audit[section] == live_audit[section], section
