"""The projection functions shared by live handlers and ``labelloop replay``, on SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from ingest.models import Frame
from labelloop.composition import projections
from labelloop.db import create_tables, get_engine
from labelloop.replay import EventApplier, parse_event, projected_tables
from labelloop.timeline import EventRecord
from schemas.events import (
    FrameLabels,
    FrameProcessed,
    FrameProcessedData,
    FrameRejected,
    FrameRejectedData,
    LabeledBox,
    LabelsSubmitted,
    LabelsSubmittedData,
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    TrainingPreempted,
    TrainingPreemptedData,
    TrainingStarted,
    TrainingStartedData,
)
from trainer.models import ModelVersion, TrainingLabel
from trainer.projections import apply_labels_batch, apply_labels_submitted

TASK = "t1"
METRICS = ModelMetrics(map50=0.9, map50_95=0.6, precision=0.95, recall=0.9)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/projections.db")
    create_tables(engine)
    return engine


def started(run: str, version: int, epoch: int = 0) -> TrainingStarted:
    return TrainingStarted.create(
        TrainingStartedData(
            task_id=TASK, run_id=run, version=version, device="cpu", epoch=epoch, epochs=5
        ),
        source="/test",
        key=(run, version, epoch),
        taskid=TASK,
    )


def published(run: str, version: int) -> ModelPublished:
    return ModelPublished.create(
        ModelPublishedData(
            task_id=TASK, run_id=run, version=version, metrics=METRICS, onnx_key="k"
        ),
        source="/test",
        key=(run, version),
        taskid=TASK,
    )


def versions(engine: Engine) -> dict[int, tuple[str, bool]]:
    with Session(engine) as session:
        rows = session.exec(select(ModelVersion).where(ModelVersion.task_id == TASK)).all()
        return {row.version: (row.status, row.current) for row in rows}


def apply_all(engine: Engine, *events: object) -> list[bool]:
    applier = EventApplier(projections())
    with Session(engine) as session:
        outcomes = [bool(applier.apply_batch(session, [event])) for event in events]  # type: ignore[list-item]
        session.commit()
    return outcomes


def test_a_published_version_retires_the_one_before(engine: Engine) -> None:
    apply_all(engine, started("r1", 1), published("r1", 1), started("r2", 2), published("r2", 2))
    assert versions(engine) == {1: ("retired", False), 2: ("published", True)}
    with Session(engine) as session:
        row = session.get(ModelVersion, (2, TASK))
        assert row is not None and row.metrics == METRICS.model_dump()


def test_events_of_another_run_never_touch_a_version(engine: Engine) -> None:
    apply_all(engine, started("r1", 1), published("other", 1), started("r1", 1, epoch=3))
    assert versions(engine) == {1: ("training", False)}


def test_a_preempted_attempt_drops_its_version_until_the_run_resumes(engine: Engine) -> None:
    preempted = TrainingPreempted.create(
        TrainingPreemptedData(
            task_id=TASK,
            run_id="r1",
            version=1,
            epochs_done=2,
            epochs=5,
            checkpoint_key="c",
            preempted_by="r0",
        ),
        source="/test",
        key=("r1", "preempted"),
        taskid=TASK,
    )
    apply_all(engine, started("r1", 1), preempted)
    assert versions(engine) == {}
    apply_all(engine, started("r1", 1, epoch=0).model_copy(update={"id": "resumed"}))
    assert versions(engine) == {1: ("training", False)}


def test_a_frame_the_manifest_refutes_keeps_its_measurements(engine: Engine) -> None:
    processed = FrameProcessed.create(
        FrameProcessedData(
            task_id=TASK,
            frame="a.jpg",
            object_key="tasks/t1/data/a.jpg",
            sha256="0" * 64,
            width=64,
            height=48,
            size_bytes=900,
            format="JPEG",
        ),
        source="/test",
        key=(TASK, "a.jpg"),
        taskid=TASK,
    )
    rejected = FrameRejected.create(
        FrameRejectedData(
            task_id=TASK,
            frame="a.jpg",
            object_key="tasks/t1/data/a.jpg",
            code="hash_mismatch",
            reason="differs",
        ),
        source="/test",
        key=(TASK, "a.jpg"),
        taskid=TASK,
    )
    apply_all(engine, processed, rejected)
    with Session(engine) as session:
        frame = session.get(Frame, (TASK, "a.jpg"))
        assert frame is not None
        assert (frame.status, frame.code, frame.sha256, frame.width) == (
            "rejected",
            "hash_mismatch",
            "0" * 64,
            64,
        )
        assert frame.processed_at.replace(tzinfo=None) == processed.time.replace(tzinfo=None)


def test_an_event_applies_once(engine: Engine) -> None:
    event = started("r1", 1)
    assert apply_all(engine, event, event) == [True, False]
    assert apply_all(engine, event) == [False]
    with Session(engine) as session:
        assert len(session.exec(select(EventRecord)).all()) == 1


def test_records_that_are_not_labelloop_events_are_skipped() -> None:
    assert parse_event(None) is None
    assert parse_event(b"not json") is None
    assert parse_event(b'{"type": "io.labelloop.unknown.v9"}') is None
    assert parse_event(b'{"type": "io.labelloop.task.created.v1", "data": {}}') is None
    event = started("r", 1)
    assert parse_event(event.model_dump_json().encode()) == event


def test_every_projected_table_is_a_table_of_the_models() -> None:
    from sqlmodel import SQLModel

    tables = projected_tables(projections())
    assert len(set(tables)) == len(tables)
    assert set(tables) <= set(SQLModel.metadata.tables)
    assert "event_log" in tables and "webhook_subscriptions" in tables


def submitted(index: int, frames: dict[str, int]) -> LabelsSubmitted:
    box = {"label": "car", "x": 1, "y": 1, "w": 4, "h": 4}
    return LabelsSubmitted.create(
        LabelsSubmittedData(
            task_id=TASK,
            job_id=f"{TASK}-j0",
            annotations=[
                FrameLabels(frame=name, boxes=[LabeledBox(**box)] * count)
                for name, count in frames.items()
            ],
            submitted_by="test",
            labeled_frames=index,
        ),
        source="/test",
        key=(index,),
        taskid=TASK,
    )


def test_labels_applied_as_a_batch_equal_labels_applied_one_by_one(tmp_path: Path) -> None:
    """The last submission of a frame wins either way, also inside one batch."""
    events = [
        submitted(1, {"a.jpg": 1, "b.jpg": 2}),
        submitted(2, {"a.jpg": 3}),
        submitted(3, {"c.jpg": 0, "b.jpg": 1}),
    ]

    def one_by_one(session: Session) -> None:
        for event in events:
            apply_labels_submitted(session, event)

    def in_batches(session: Session) -> None:
        apply_labels_batch(session, events[:1])
        apply_labels_batch(session, events[1:])

    tables = []
    for name, apply in (("one", one_by_one), ("batch", in_batches)):
        engine = get_engine(f"sqlite:///{tmp_path}/{name}.db")
        create_tables(engine)
        with Session(engine) as session:
            apply(session)
            session.commit()
            rows = session.exec(select(TrainingLabel).order_by(TrainingLabel.frame)).all()
            tables.append([(row.frame, len(row.boxes)) for row in rows])
    assert tables[0] == tables[1] == [("a.jpg", 3), ("b.jpg", 1), ("c.jpg", 0)]
