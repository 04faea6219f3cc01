"""The dashboard on a real app and database (SQLite): its login and cookie, and that each page
shows what the visitor's token may read through the API and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from labelloop.api.charts import BOX, training_curves
from labelloop.api.dashboard import COOKIE, _safe_next
from labelloop.auth import Role, issue_token
from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import Transactions
from labelloop.serve import build_app
from labelloop.tasks import PROJECTION, Task, task_created_event
from labelloop.timeline import record_events
from schemas.events import EpochMetrics, TrainingStarted, TrainingStartedData


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


def epoch_event(run: str, version: int, epoch: int, loss: float, map50: float) -> TrainingStarted:
    """A run's report of one finished epoch, as the trainer records it."""
    figures = EpochMetrics(
        box_loss=loss,
        cls_loss=loss / 2,
        dfl_loss=1.0,
        precision=map50,
        recall=map50,
        map50=map50,
        map50_95=map50 / 2,
    )
    return TrainingStarted.create(
        TrainingStartedData(
            task_id="task-a",
            run_id=run,
            version=version,
            device="cpu",
            epoch=epoch,
            epochs=4,
            metrics=figures,
        ),
        source="labelloop/trainer",
        key=(run, 1, epoch),
        taskid="task-a",
        correlationid=run,
    )


def test_training_curves_are_drawn_per_run_newest_first(settings: Settings) -> None:
    engine = get_engine(settings.database_url)
    record_events(engine, [epoch_event("run-1", 1, e, 4.0 - e, 0.2 * e) for e in (1, 2, 3)])
    record_events(engine, [epoch_event("run-2", 2, 1, 2.5, 0.5)])
    page = logged_in(settings, settings.admin_token).get("/ui/tasks/task-a").text
    assert "Training curves" in page
    assert page.index('data-version="2"') < page.index('data-version="1"'), "newest first"
    assert "3 of 4 epochs on cpu" in page and "1 of 4 epochs on cpu" in page
    assert page.count("<polyline") == 2 * (3 + 4), "two charts a run: 3 losses, 4 figures"
    assert "mAP50 0.600" in page, "the last epoch's figure beside its line"

    [run] = training_curves(
        [epoch_event("r", 1, e, 4.0 - e, 0.25 * e).model_dump(mode="json") for e in (1, 2, 4)]
    )
    [box, _, _] = run.loss.lines
    assert run.loss.y_top == 5.0 and run.validation.y_top == 1.0
    points = [tuple(map(float, p.split(","))) for p in box.points.split()]
    assert [x for x, _ in points] == sorted(x for x, _ in points), "epochs left to right"
    assert points[0][1] < points[-1][1], "a falling loss ends lower on the chart (larger y)"
    assert BOX.left == points[0][0] and points[-1][0] == BOX.width - BOX.right, "epochs 1 and 4"


def test_a_correlation_link_narrows_the_timeline_to_its_chain(settings: Settings) -> None:
    engine = get_engine(settings.database_url)
    record_events(engine, [epoch_event("run-1", 1, e, 3.0, 0.5) for e in (1, 2)])
    http = logged_in(settings, settings.admin_token)
    whole = http.get("/ui/tasks/task-a").text
    assert whole.count('class="event"') == 3
    assert 'href="/ui/tasks/task-a?correlation=run-1"' in whole, "a link to follow"
    chain = http.get("/ui/tasks/task-a", params={"correlation": "run-1"}).text
    assert chain.count('class="event"') == 2 and 'id="chain"' in chain
    assert 'data-type="io.labelloop.task.created.v1"' not in chain


def test_the_tasks_page_follows_changes_to_its_tasks_alone(settings: Settings) -> None:
    settings = settings.model_copy(update={"sse_max_life_s": 0.5})
    engine = get_engine(settings.database_url)
    annotator = logged_in(settings, token(settings, Role.ANNOTATOR, ["task-a"]))
    page = annotator.get("/ui/").text
    assert 'new EventSource("/ui/changes?after=' in page and 'id="task-table"' in page
    start = int(page.split("/ui/changes?after=")[1].split('"')[0])
    assert "street cars" in annotator.get("/ui/tasks-table").text

    def changes(http: TestClient) -> str:
        return http.get("/ui/changes", params={"after": start}).text

    other = task_created_event(Task(id="task-c", name="c", labels=["car"], created_by="a"))
    record_events(engine, [other])
    assert "id:" not in changes(annotator), "another task's change is not the annotator's"
    record_events(engine, [epoch_event("run-1", 1, 1, 3.0, 0.5)])
    seen = changes(annotator)
    assert "event: io.labelloop.training.started.v1" in seen and seen.count("id:") == 1
    admin = logged_in(settings, settings.admin_token)
    assert changes(admin).count("id:") == 1, "only the newest change is sent"
    assert logged_in(settings, settings.admin_token).get("/ui/changes?after=x").status_code == 422
    assert TestClient(build_app(settings, [])).get("/ui/changes").status_code == 401


def test_label_progress_counts_each_jobs_labeled_frames(settings: Settings) -> None:
    from labeler_assist.models import Annotation, AssistJob

    with Session(get_engine(settings.database_url)) as session:
        session.add(AssistJob(id="task-a-j2", task_id="task-a", frames=["c", "d"]))
        session.add(AssistJob(id="task-a-j1", task_id="task-a", frames=["a", "b"]))
        for frame, job in (("a", "task-a-j1"), ("b", "task-a-j1"), ("c", "task-a-j2")):
            session.add(
                Annotation(task_id="task-a", frame=frame, job_id=job, boxes=[], submitted_by="x")
            )
        session.commit()
    http = TestClient(build_app(settings, ["api", "labeler-assist", "jobgen"]))
    answer = http.get(
        "/api/tasks/task-a/label-progress",
        headers={"Authorization": f"Bearer {settings.admin_token}"},
    ).json()
    assert answer["labeled_frames"] == 3 and answer["label_threshold"] == 10
    assert answer["next_training_at"] == 10
    assert [(j["job_id"], j["frames"], j["labeled"]) for j in answer["jobs"]] == [
        ("task-a-j1", 2, 2),
        ("task-a-j2", 2, 1),
    ]
    scoped = {"Authorization": f"Bearer {token(settings, Role.ANNOTATOR, ['task-b'])}"}
    assert http.get("/api/tasks/task-a/label-progress", headers=scoped).status_code == 404
