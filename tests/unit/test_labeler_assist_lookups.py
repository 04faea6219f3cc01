"""labeler-assist answers for what was announced before its consumer read it (SQLite, no servers).

jobgen's real handler announces the jobs; the frames are announced the way ingest does. Then
labels are submitted while labeler-assist's projection is still empty, and again after the
consumer's handlers have caught up: counted once.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from ingest import projections as ingest
from ingest.manifest import data_ready_events
from jobgen import projections as jobgen
from jobgen.handlers import handle_data_ready, handle_frames_listed
from labeler_assist import projections as assist
from labeler_assist.handlers import remember
from labeler_assist.labels import NotFound, NotPermitted, submit_labels
from labeler_assist.lookups import find_frame, find_job
from labeler_assist.models import Annotation, AssistFrame, AssistJob, LabelCounter
from labelloop.auth import Principal, Role
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions, committed_event
from labelloop.tasks import Task
from schemas.events import (
    FrameLabels,
    FrameProcessed,
    FrameProcessedData,
    JobCreated,
    LabelsSubmitted,
    TaskDataReady,
)

TASK = "t-ryp"
FRAMES = [f"f{index:02d}.jpg" for index in range(6)]
ALICE = Principal("alice", Role.ANNOTATOR)


@pytest.fixture
def transactions(tmp_path: Path) -> Transactions:
    engine: Engine = get_engine(f"sqlite:///{tmp_path}/lookups.db")
    create_tables(engine)
    with Session(engine) as session:
        session.add(
            Task(
                id=TASK,
                name="t",
                labels=["car"],
                segment_size=4,
                label_threshold=3,
                created_by="test",
            )
        )
        session.commit()
    return Transactions(engine)  # each service binds its own projection, as it does in serve


def announce_frames(transactions: Transactions) -> list[FrameProcessed]:
    """``frame.processed`` as ingest records it (its id from task and frame name)."""
    events = [
        FrameProcessed.create(
            FrameProcessedData(
                task_id=TASK,
                frame=name,
                object_key=f"tasks/{TASK}/{name}",
                sha256="0" * 64,
                width=64,
                height=48,
                size_bytes=100,
                format="JPEG",
            ),
            source="/labelloop/ingest",
            key=(TASK, name),
            taskid=TASK,
        )
        for name in FRAMES
    ]
    with transactions.bound(ingest.PROJECTION).unit_of_work() as uow:
        for event in events:
            uow.record(event)
    return events


def announce_jobs(transactions: Transactions) -> list[str]:
    *listing, ready = data_ready_events(TASK, FRAMES, rejected=0)
    handle_frames_listed(listing, transactions.bound(jobgen.PROJECTION))  # type: ignore[arg-type]
    assert isinstance(ready, TaskDataReady)
    return handle_data_ready(ready, transactions.bound(jobgen.PROJECTION))


def labels(frames: list[str]) -> list[FrameLabels]:
    box = {"label": "car", "x": 1, "y": 1, "w": 10, "h": 10}
    return [FrameLabels.model_validate({"frame": name, "boxes": [box]}) for name in frames]


def test_an_announced_job_is_found_from_its_event_before_the_projection(
    transactions: Transactions,
) -> None:
    announce_frames(transactions)
    first, second = announce_jobs(transactions)
    with Session(transactions.engine) as session:
        job = find_job(session, first)
        assert job is not None and (job.task_id, job.frames) == (TASK, FRAMES[:4])
        assert find_job(session, second) is not None
        assert find_job(session, f"{TASK}-j9999") is None
        frame = find_frame(session, TASK, FRAMES[0])
        assert frame is not None and (frame.width, frame.height) == (64, 48)
        assert find_frame(session, TASK, "nope.jpg") is None
        # read through, never stored: the consumer stores its rows when it gets there
        assert session.exec(select(func.count()).select_from(AssistJob)).one() == 0
        assert session.exec(select(func.count()).select_from(AssistFrame)).one() == 0
        event = committed_event(session, JobCreated, first)
        assert event is not None and event.id == JobCreated.id_for(first)


def test_labels_before_and_after_the_consumer_catches_up_count_once(
    transactions: Transactions,
) -> None:
    frames = announce_frames(transactions)
    first, _ = announce_jobs(transactions)
    with transactions.bound(assist.PROJECTION).unit_of_work() as uow:
        submit_labels(uow, first, labels(FRAMES[:4]), ALICE)
    with transactions.bound(assist.PROJECTION).unit_of_work() as uow, pytest.raises(NotFound):
        submit_labels(uow, f"{TASK}-j9999", labels(FRAMES[:1]), ALICE)

    # the consumer catches up on every announced event
    with Session(transactions.engine) as session:
        announced = session.exec(
            select(OutboxMessage.payload).where(OutboxMessage.event_type == JobCreated.event_type())
        ).all()
    for event in frames:
        remember([event], transactions.bound(assist.PROJECTION))
    for payload in announced:
        remember([JobCreated.model_validate_json(payload)], transactions.bound(assist.PROJECTION))
    with transactions.bound(assist.PROJECTION).unit_of_work() as uow:
        submit_labels(uow, first, labels(FRAMES[:4]), Principal("bob", Role.ANNOTATOR))

    with Session(transactions.engine) as session:
        counter = session.get(LabelCounter, TASK)
        assert counter is not None and (counter.labeled_frames, counter.crossings) == (4, 1)
        assert session.exec(select(func.count()).select_from(AssistJob)).one() == 2


def test_the_right_to_label_is_checked_on_the_job_the_transaction_writes(
    transactions: Transactions,
) -> None:
    """A job announced after a route's first look is still checked against the caller's scope
    (the check and the write are one transaction): nothing is written into another task."""
    announce_frames(transactions)
    first, _ = announce_jobs(transactions)
    elsewhere = Principal("mallory", Role.ANNOTATOR, frozenset({"another-task"}))
    with transactions.bound(assist.PROJECTION).unit_of_work() as uow, pytest.raises(NotFound):
        submit_labels(uow, first, labels(FRAMES[:2]), elsewhere)
    with transactions.bound(assist.PROJECTION).unit_of_work() as uow, pytest.raises(NotPermitted):
        submit_labels(uow, first, labels(FRAMES[:2]), Principal("audit", Role.AUDITOR))
    with Session(transactions.engine) as session:
        assert session.exec(select(func.count()).select_from(Annotation)).one() == 0
        assert (
            session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.event_type == LabelsSubmitted.event_type())
            ).one()
            == 0
        )
