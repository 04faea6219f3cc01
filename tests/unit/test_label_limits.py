"""What one label submission may hold: bounded with a reason (422), and never an event the
broker would refuse (413), with nothing recorded (issue 14, item 1). The app is driven in
process over SQLite; no broker is involved, as a refused request never reaches one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from labeler_assist.models import Annotation, AssistFrame, AssistJob
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage
from labelloop.serve import build_app
from labelloop.tasks import Task

TASK, JOB = "t-limits", "t-limits-j0000"
FRAMES = [f"f{index}.jpg" for index in range(6)]
LONG_LABEL = "l" * 64


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/labels.db", event_max_bytes=16_384)
    engine = get_engine(settings.database_url)
    create_tables(engine)
    with Session(engine) as session:
        session.add(
            Task(id=TASK, name="t", labels=["car", LONG_LABEL], segment_size=0, created_by="t")
        )
        session.add(AssistJob(id=JOB, task_id=TASK, frames=FRAMES))
        for name in FRAMES:
            session.add(AssistFrame(task_id=TASK, name=name, object_key=name, width=64, height=64))
        session.commit()
    return settings


def put(settings: Settings, frames: list[dict[str, Any]]) -> Any:
    client = TestClient(build_app(settings, ["labeler-assist"]))
    return client.put(
        f"/api/jobs/{JOB}/annotations",
        json={"frames": frames},
        headers={"Authorization": f"Bearer {settings.admin_token}"},
    )


def boxes(count: int, label: str = "car") -> list[dict[str, Any]]:
    return [{"label": label, "x": 1, "y": 1, "w": 4, "h": 4} for _ in range(count)]


def recorded(settings: Settings) -> tuple[int, int]:
    with Session(get_engine(settings.database_url)) as session:
        return (
            session.exec(select(func.count()).select_from(OutboxMessage)).one(),
            session.exec(select(func.count()).select_from(Annotation)).one(),
        )


def test_a_frame_with_25000_boxes_is_refused_with_the_limit(settings: Settings) -> None:
    answer = put(settings, [{"frame": FRAMES[0], "boxes": boxes(25_000)}])
    assert answer.status_code == 422, answer.text
    assert "1000" in answer.text
    assert recorded(settings) == (0, 0)


def test_more_boxes_than_one_request_holds_are_refused_with_a_reason(settings: Settings) -> None:
    answer = put(settings, [{"frame": name, "boxes": boxes(801)} for name in FRAMES[:5]])
    assert answer.status_code == 422, answer.text
    assert "4005 boxes in one request; at most 4000" in answer.text
    assert recorded(settings) == (0, 0)


def test_a_submission_whose_event_would_outgrow_the_broker_is_413_and_records_nothing(
    settings: Settings,
) -> None:
    frames = [{"frame": name, "boxes": boxes(200, LONG_LABEL)} for name in FRAMES[:2]]
    answer = put(settings, frames)
    assert answer.status_code == 413, answer.text[:300]
    assert "io.labelloop.labels.submitted.v1 would be" in answer.json()["detail"]
    assert recorded(settings) == (0, 0)
    # within the limits the same route records the labels and their event
    assert put(settings, [{"frame": FRAMES[0], "boxes": boxes(3)}]).status_code == 200
    assert recorded(settings) == (1, 1)
