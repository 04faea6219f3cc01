"""labeler-assist's advice on a real database (SQLite), the detector and frame reads replaced:
which frames are checked (never those the model trained on), how checks go stale, and how
frames are ranked before and after a model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

import labelloop.timeline  # noqa: F401 - the event log's table, which the audit reads
from labeler_assist import IDENTITY
from labeler_assist.detectors import Detection
from labeler_assist.guidance import check_labels, current_issues, ranking, record_ranking
from labeler_assist.models import AssistFrame, Preannotation, ServedModel
from labeler_assist.preannotation import LoadedModel, ModelServer
from labeler_assist.projections import PROJECTION
from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage, Transactions
from schemas.events import (
    FrameLabels,
    FramesRanked,
    LabelIssuesFound,
    LabelsSubmitted,
    LabelsSubmittedData,
)

TASK = "t-guide"
FRAMES = [f"f{i}.jpg" for i in range(6)]
BOX = {"label": "box", "x": 10.0, "y": 10.0, "w": 20.0, "h": 20.0}


class SeesOneBox:
    """A detector that finds BOX, surely, on every frame."""

    async def detect(self, images: list[bytes]) -> list[list[Detection]]:
        return [[Detection(0, 0.9, 10, 10, 20, 20)] for _ in images]


class Server(ModelServer):
    def _read_frame(self, frame: AssistFrame) -> bytes | None:
        return frame.name.encode()


@pytest.fixture
def server(tmp_path: Path) -> Server:
    engine = get_engine(f"sqlite:///{tmp_path}/assist.db")
    projections()  # imports every service's tables (the audit reads them all)

    create_tables(engine)
    transactions = Transactions(engine, topic_name=str).bound(PROJECTION)
    with Session(engine) as session:
        for name in FRAMES:
            session.add(AssistFrame(task_id=TASK, name=name, object_key=name, width=64, height=64))
        session.commit()
    return Server(Settings(), None, transactions)  # type: ignore[arg-type]


def serve(server: Server, trained: frozenset[str] | None, version: int = 1) -> None:
    loaded = LoadedModel(TASK, version, ["box"], "onnxruntime", SeesOneBox(), trained=trained)
    server._loaded[TASK] = loaded
    with Session(server.transactions.engine) as session:
        row = session.get(ServedModel, TASK) or ServedModel(
            task_id=TASK, version=version, onnx_key="m", labels=["box"], backend="onnxruntime"
        )
        row.version = version
        session.add(row)
        session.commit()


def label(server: Server, boxes: dict[str, list[dict[str, Any]]]) -> LabelsSubmitted:
    submitted = LabelsSubmitted.create(
        LabelsSubmittedData(
            task_id=TASK,
            job_id="j",
            annotations=[
                FrameLabels.model_validate({"frame": f, "boxes": b}) for f, b in boxes.items()
            ],
            submitted_by="someone",
            labeled_frames=len(boxes),
        ),
        source=IDENTITY.source,
        key=(str(sorted(boxes.items())),),
        taskid=TASK,
    )
    with server.transactions.unit_of_work() as uow:
        uow.record(submitted)
    return submitted


def recorded(server: Server, kind: type[Any]) -> list[Any]:
    with Session(server.transactions.engine) as session:
        rows = session.exec(
            select(OutboxMessage).where(OutboxMessage.event_type == kind.event_type())
        ).all()
        return [kind.model_validate_json(row.payload) for row in rows]


def test_a_model_checks_only_labels_it_did_not_train_on(server: Server) -> None:
    cause = label(server, {"f0.jpg": [BOX], "f1.jpg": [], "f2.jpg": [BOX]})
    serve(server, trained=frozenset({"f0.jpg"}))
    checked = asyncio.run(check_labels(server, TASK, None, "model.published", cause))
    assert checked == 2
    [event] = recorded(server, LabelIssuesFound)
    assert [c.frame for c in event.data.checked] == ["f1.jpg", "f2.jpg"]
    assert [(i.frame, i.kind) for i in event.data.issues] == [("f1.jpg", "missing")]
    with Session(server.transactions.engine) as session:
        found = current_issues(session, TASK)
    assert found.model_version == 1 and found.checked == 2
    assert [(i["frame"], i["kind"]) for i in found.issues] == [("f1.jpg", "missing")]


def test_an_unknown_training_set_checks_nothing(server: Server) -> None:
    cause = label(server, {"f1.jpg": []})
    serve(server, trained=None)
    assert asyncio.run(check_labels(server, TASK, None, "model.published", cause)) == 0
    assert recorded(server, LabelIssuesFound) == []


def test_a_fixed_label_hides_its_old_issue_until_checked_again(server: Server) -> None:
    serve(server, trained=frozenset())
    cause = label(server, {"f1.jpg": []})
    asyncio.run(check_labels(server, TASK, ["f1.jpg"], "labels.submitted", cause))
    fixed = label(server, {"f1.jpg": [BOX]})
    with Session(server.transactions.engine) as session:
        stale = current_issues(session, TASK)
    assert stale.issues == [] and stale.checked == 0, "a check of other labels is not shown"
    asyncio.run(check_labels(server, TASK, ["f1.jpg"], "labels.submitted", fixed))
    with Session(server.transactions.engine) as session:
        again = current_issues(session, TASK)
    assert again.checked == 1 and again.issues == []


def test_frames_are_spread_before_a_model_and_by_uncertainty_after(server: Server) -> None:
    label(server, {"f0.jpg": [BOX]})
    with Session(server.transactions.engine) as session:
        before = ranking(session, TASK)
    assert before.strategy == "spread" and before.model_version is None
    assert [name for name, _ in before.frames] == [
        "f1.jpg",  # position 0
        "f4.jpg",  # 3/5
        "f5.jpg",  # 4/5
        "f2.jpg",  # 1/5
        "f3.jpg",  # 2/5
    ]
    serve(server, trained=frozenset({"f0.jpg"}))
    with Session(server.transactions.engine) as session:
        for name, score in (("f4.jpg", 0.9), ("f2.jpg", 0.2)):
            session.add(
                Preannotation(
                    task_id=TASK,
                    frame=name,
                    model_version=1,
                    boxes=[],
                    backend="onnxruntime",
                    uncertainty=score,
                )
            )
        session.commit()
    cause = label(server, {"f0.jpg": [BOX]})
    ranked = record_ranking(server, TASK, cause)
    assert ranked.strategy == "uncertainty" and ranked.model_version == 1
    assert [name for name, _ in ranked.frames][:2] == ["f4.jpg", "f2.jpg"]
    [event] = recorded(server, FramesRanked)
    assert event.data.unlabeled == 5 and event.data.frames[0].frame == "f4.jpg"
    record_ranking(server, TASK, cause)
    assert len(recorded(server, FramesRanked)) == 1, "announced once per model version"


def test_the_audit_prints_the_issues_found(server: Server, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelloop.cli import app
    from labelloop.tasks import Task

    with Session(server.transactions.engine) as session:
        session.add(Task(id=TASK, name="guide", labels=["box"], created_by="admin"))
        session.commit()
    serve(server, trained=frozenset())
    cause = label(server, {"f1.jpg": []})
    asyncio.run(check_labels(server, TASK, ["f1.jpg"], "labels.submitted", cause))
    url = str(server.transactions.engine.url)
    printed = CliRunner().invoke(app, ["audit", "task", TASK, "--db", url], terminal_width=200)
    assert printed.exit_code == 0, printed.output
    assert "label issues" in printed.output and "missing" in printed.output
    assert "f1.jpg" in printed.output and "v1" in printed.output
