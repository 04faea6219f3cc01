"""What each deployable answers over HTTP: the api pod every route, a consumer pod its own."""

from __future__ import annotations

from pathlib import Path

from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.serve import build_app

EVERY_SERVICE_ROUTE = {
    ("POST", "/api/tasks"),
    ("POST", "/api/tasks/{task_id}/uploads"),  # ingest
    ("GET", "/api/tasks/{task_id}/jobs"),  # jobgen
    ("PUT", "/api/jobs/{job_id}/annotations"),  # labeler-assist
    ("GET", "/api/jobs/{job_id}/preannotations"),  # labeler-assist
    ("GET", "/api/tasks/{task_id}/next-frames"),  # labeler-assist
    ("GET", "/api/tasks/{task_id}/label-issues"),  # labeler-assist
    ("POST", "/api/webhooks"),  # webhooks
    ("GET", "/api/tasks/{task_id}/models"),  # trainer
}


def routes(names: list[str], tmp_path: Path) -> set[tuple[str, str]]:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/routes.db")
    paths = build_app(settings, names).openapi()["paths"]
    return {(method.upper(), path) for path, methods in paths.items() for method in methods}


def test_the_api_pod_answers_every_services_routes(tmp_path: Path) -> None:
    assert routes(["api"], tmp_path) >= EVERY_SERVICE_ROUTE


def test_a_consumer_pod_answers_only_its_own(tmp_path: Path) -> None:
    ingest = routes(["ingest"], tmp_path)
    assert ("POST", "/api/tasks/{task_id}/uploads") in ingest
    assert ("POST", "/api/webhooks") not in ingest
    assert ("POST", "/api/tasks") not in ingest


def test_plain_postgresql_urls_use_psycopg_3() -> None:
    engine = get_engine("postgresql://user@127.0.0.1:5432/labelloop")
    assert engine.dialect.driver == "psycopg"


def test_control_characters_are_refused_before_any_lookup(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    app = build_app(Settings(database_url=f"sqlite:///{tmp_path}/routes.db"), ["api"])
    client = TestClient(app)  # no lifespan: nothing but the middleware may answer
    for path in ("/api/tasks/a%00b", "/api/tasks/x?until=%07", "/api/jobs/%0a/annotations"):
        response = client.get(path)
        assert response.status_code == 400, path
        assert "control characters" in response.json()["detail"]
    assert client.get("/api/tasks/ok-id").status_code == 401  # reaches auth as usual
