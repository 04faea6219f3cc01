"""The dashboard on a real app and database (SQLite): its login and cookie, and that each page
shows what the visitor's token may read through the API and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from labelloop.api.dashboard import COOKIE, _safe_next
from labelloop.auth import Role, issue_token
from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import Transactions
from labelloop.serve import build_app
from labelloop.tasks import PROJECTION, Task, task_created_event
from labelloop.timeline import record_events


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/ui.db")
    projections()
    engine = get_engine(settings.database_url)
    create_tables(engine)
    transactions = Transactions(engine, topic_name=str).bound(PROJECTION)
    for task_id, name in (("task-a", "street cars"), ("task-b", "secret <b>project</b>")):
        created = task_created_event(Task(id=task_id, name=name, labels=["car"], created_by="a"))
        with transactions.unit_of_work() as uow:
            uow.record(created)
        record_events(engine, [created])  # as the api's timeline consumer does
    return settings


def token(settings: Settings, role: Role, tasks: list[str] | None) -> str:
    with Session(get_engine(settings.database_url)) as session:
        return issue_token(session, "ann", role, tasks)[1]


def logged_in(settings: Settings, secret: str) -> TestClient:
    http = TestClient(build_app(settings, []), follow_redirects=False)
    answer = http.post(
        "/ui/login", content=f"token={secret}&next=/ui/", headers={"content-type": "x"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/"
    return http


def test_pages_need_a_login_and_the_cookie_stays_out_of_scripts(settings: Settings) -> None:
    http = TestClient(build_app(settings, []), follow_redirects=False)
    first = http.get("/ui/tasks/task-a")
    assert (
        first.status_code == 303 and first.headers["location"] == "/ui/login?next=/ui/tasks/task-a"
    )
    assert "Log in" in http.get("/ui/login").text
    wrong = http.post("/ui/login", content="token=llt_nope")
    assert wrong.status_code == 401 and "not a valid labelloop token" in wrong.text
    right = http.post("/ui/login", content=f"token={settings.admin_token}&next=//evil.example/")
    assert right.status_code == 303 and right.headers["location"] == "/ui/"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/ui" in cookie
    out = http.post("/ui/logout")
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


def test_the_admin_sees_every_task_escaped(settings: Settings) -> None:
    http = logged_in(settings, settings.admin_token)
    page = http.get("/ui/").text
    assert "street cars" in page and "task-b" in page
    assert "secret &lt;b&gt;project&lt;/b&gt;" in page and "<b>project</b>" not in page
    task = http.get("/ui/tasks/task-a").text
    assert "No job yet" in task and "No model yet" in task and 'id="timeline"' in task
    assert 'class="event" data-type="io.labelloop.task.created.v1"' in task, "its timeline"


def test_an_annotator_sees_its_tasks_alone(settings: Settings) -> None:
    http = logged_in(settings, token(settings, Role.ANNOTATOR, ["task-a"]))
    page = http.get("/ui/").text
    assert "street cars" in page and "task-b" not in page and "secret" not in page
    assert http.get("/ui/tasks/task-a").status_code == 200
    assert http.get("/ui/tasks/task-b").status_code == 404
    assert http.get("/ui/tasks/task-b/summary").status_code == 404
    assert http.get("/ui/tasks/task-b/events").status_code == 404
    nothing = logged_in(settings, token(settings, Role.AUDITOR, []))
    assert 'id="no-tasks"' in nothing.get("/ui/").text


def test_the_login_sends_nowhere_but_the_dashboard() -> None:
    assert _safe_next("/ui/tasks/x") == "/ui/tasks/x"
    assert _safe_next("https://evil.example/ui/") == "/ui/"
    assert _safe_next("//evil.example") == "/ui/"


def test_get_api_tasks_answers_each_token_its_tasks(settings: Settings) -> None:
    http = TestClient(build_app(settings, ["api"]))
    admin = {"Authorization": f"Bearer {settings.admin_token}"}
    assert [t["id"] for t in http.get("/api/tasks", headers=admin).json()] == ["task-b", "task-a"]
    scoped = {"Authorization": f"Bearer {token(settings, Role.AUDITOR, ['task-b'])}"}
    assert [t["id"] for t in http.get("/api/tasks", headers=scoped).json()] == ["task-b"]
    assert http.get("/api/tasks", headers=admin, params={"limit": 0}).status_code == 422


def test_webhook_deliveries_show_to_admins_alone(settings: Settings) -> None:
    from webhooks.models import Delivery, Subscription

    with Session(get_engine(settings.database_url)) as session:
        session.add(
            Subscription(
                id="sub1",
                url="https://hooks.example/secret-path",
                events=["io.labelloop.task.created.v1"],
                secret="whsec_x",
                created_by="admin",
            )
        )
        session.add(
            Delivery(
                id="d1",
                subscription_id="sub1",
                event_id="e1",
                event_type="io.labelloop.task.created.v1",
                task_id="task-a",
                status="delivered",
                attempts=1,
                payload=b"{}",
                allowed_attempts=8,
            )
        )
        session.commit()
    admin = logged_in(settings, settings.admin_token).get("/ui/tasks/task-a").text
    assert 'id="deliveries"' in admin and "hooks.example/secret-path" in admin
    annotator = logged_in(settings, token(settings, Role.ANNOTATOR, ["task-a"]))
    page = annotator.get("/ui/tasks/task-a").text
    assert "deliveries" not in page and "secret-path" not in page


def test_a_resumed_stream_with_a_bad_id_is_refused(settings: Settings) -> None:
    http = logged_in(settings, settings.admin_token)
    answer = http.get("/ui/tasks/task-a/events", headers={"Last-Event-ID": "12abc"})
    assert answer.status_code == 422


def test_any_route_takes_a_token_as_basic_auth_password(settings: Settings) -> None:
    import base64

    http = TestClient(build_app(settings, ["api"]))
    basic = base64.b64encode(f"any-user:{settings.admin_token}".encode()).decode()
    assert (
        http.get("/api/tasks/task-a", headers={"Authorization": f"Basic {basic}"}).json()["id"]
        == "task-a"
    )
    wrong = base64.b64encode(b"any-user:llt_nope").decode()
    assert http.get("/api/tasks", headers={"Authorization": f"Basic {wrong}"}).status_code == 401
    assert http.get("/api/tasks").status_code == 401
