"""Event streams (SSE) are bounded: a cap per token and in all, a maximum life the client
resumes across with ``Last-Event-ID``, and a revoked token's stream ends within seconds."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from labelloop.auth import ApiToken, Role, issue_token
from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.serve import build_app
from labelloop.tasks import Task, task_created_event
from labelloop.timeline import append_events
from schemas.events import TaskCreated, WebhookSubscriptionCreated, WebhookSubscriptionCreatedData

TASK = "t-sse"


def created() -> TaskCreated:
    return task_created_event(Task(id=TASK, name="t", labels=["car"], created_by="admin"))


def later() -> WebhookSubscriptionCreated:
    data = WebhookSubscriptionCreatedData(
        subscription_id="sub_1", url="https://x.example/", events=[], task_id=TASK, created_by="a"
    )
    return WebhookSubscriptionCreated.create(data, source="/test", key=("sub_1",), taskid=TASK)


def app_with(tmp_path: Path, **limits: float) -> tuple[Settings, TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/sse.db", **limits)  # type: ignore[arg-type]
    engine = get_engine(settings.database_url)
    create_tables(engine)
    with Session(engine) as session:
        session.add(Task(id=TASK, name="t", labels=["car"], created_by="admin"))
        append_events(session, [created()])
        session.commit()
    return settings, TestClient(build_app(settings, ["api"]))  # no lifespan: no broker


def test_a_stream_past_its_life_is_resumed_where_it_was(tmp_path: Path) -> None:
    settings, http = app_with(tmp_path, sse_max_life_s=0.5)
    engine = get_engine(settings.database_url)

    def publish_later() -> None:
        time.sleep(1.5)  # after the first stream or two have ended
        with Session(engine) as session:
            append_events(session, [later()])
            session.commit()

    threading.Thread(target=publish_later, daemon=True).start()
    client = LabelloopClient("http://testserver", settings.admin_token)
    http.headers["Authorization"] = f"Bearer {settings.admin_token}"
    client.http = http
    started = time.monotonic()
    events = list(client.events(TASK, until=later().type, timeout_s=20))
    assert [event["id"] for event in events] == [created().id, later().id], "none twice"
    assert time.monotonic() - started >= 1.4


def test_a_revoked_tokens_stream_ends_within_seconds(tmp_path: Path) -> None:
    settings, http = app_with(tmp_path, sse_recheck_s=0.2)
    engine = get_engine(settings.database_url)
    with Session(engine) as session:
        row, token = issue_token(session, "annotator", Role.ANNOTATOR, [TASK])
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    with http.stream("GET", f"/api/tasks/{TASK}/events", headers=headers) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        with Session(engine) as session:
            revoked = session.get(ApiToken, row.id)
            assert revoked is not None
            revoked.revoked = True
            session.add(revoked)
            session.commit()
        revoked_at = time.monotonic()
        for _ in lines:  # the server ends the stream: the loop ends
            pass
    assert time.monotonic() - revoked_at < 3


@pytest.mark.parametrize("per_token", [1, 2])
def test_streams_beyond_the_cap_are_refused_with_retry_after(
    tmp_path: Path, per_token: int
) -> None:
    settings, http = app_with(tmp_path, sse_max_streams_per_token=per_token)
    headers = {"Authorization": f"Bearer {settings.admin_token}", "Accept": "text/event-stream"}
    path = f"/api/tasks/{TASK}/events"
    streams = [http.stream("GET", path, headers=headers) for _ in range(per_token)]
    opened = [stream.__enter__() for stream in streams]
    assert all(response.status_code == 200 for response in opened)
    refused = http.get(path, headers=headers)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
    assert "LABELLOOP_SSE_MAX_STREAMS_PER_TOKEN" in refused.text
    assert http.get(path, headers={"Authorization": headers["Authorization"]}).status_code == 200
    for stream in streams:
        stream.__exit__(None, None, None)
    for _ in range(50):  # a closed stream gives its slot back
        with http.stream("GET", path, headers=headers) as again:
            if again.status_code == 200:
                break
        time.sleep(0.1)
    assert again.status_code == 200
