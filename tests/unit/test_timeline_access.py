"""A task's timeline shows each role what it may read: webhook URLs (which often carry
secrets) reach admins only, as the webhooks routes show them, in JSON and over SSE."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from labelloop.auth import Role, issue_token
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.serve import build_app
from labelloop.tasks import Task, task_created_event
from labelloop.timeline import append_events
from schemas.events import WebhookSubscriptionCreated, WebhookSubscriptionCreatedData

TASK = "t-timeline"
HOOK = "https://hooks.example.com/labelloop?token=s3cr3t"


def test_webhook_urls_reach_admins_only(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/timeline.db")
    engine = get_engine(settings.database_url)
    create_tables(engine)
    subscribed = WebhookSubscriptionCreated.create(
        WebhookSubscriptionCreatedData(
            subscription_id="sub_1", url=HOOK, events=[], task_id=TASK, created_by="admin"
        ),
        source="/test",
        key=("sub_1",),
        taskid=TASK,
    )
    task = Task(id=TASK, name="t", labels=["car"], created_by="admin")
    created = task_created_event(task)
    with Session(engine) as session:
        session.add(task)
        append_events(session, [subscribed, created])
        session.commit()
        tokens = {
            role: issue_token(session, role.value, role, [TASK])[1]
            for role in (Role.ANNOTATOR, Role.AUDITOR)
        }
    tokens[Role.ADMIN] = settings.admin_token
    client = TestClient(build_app(settings, ["api"]))  # no lifespan: no broker is needed
    path = f"/api/tasks/{TASK}/events"
    for role, token in tokens.items():
        headers = {"Authorization": f"Bearer {token}"}
        listed = client.get(path, headers=headers)
        assert listed.status_code == 200, listed.text
        streamed = client.get(
            path,
            params={"until": created.type},
            headers={**headers, "Accept": "text/event-stream"},
        )
        for text in (listed.text, streamed.text):
            assert created.id in text
            assert (HOOK in text) is (role is Role.ADMIN), role
            assert (subscribed.id in text) is (role is Role.ADMIN), role
    assert [e["type"] for e in json.loads(listed.text)] == [subscribed.type, created.type]
