"""Issuing tokens: a token limited to no task reads nothing, never everything."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from labelloop.auth import Role, issue_token, principal_for
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.serve import build_app


def test_an_empty_task_list_is_refused_with_a_reason(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/tokens.db")
    create_tables(get_engine(settings.database_url))
    client = TestClient(build_app(settings, ["api"]))  # no lifespan: no broker is needed
    headers = {"Authorization": f"Bearer {settings.admin_token}"}
    body = {"name": "nobody's", "role": "annotator", "task_ids": []}
    response = client.post("/api/tokens", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert "task_ids" in response.text and "at least 1" in response.text
    scoped = client.post("/api/tokens", json={**body, "task_ids": ["t1"]}, headers=headers)
    assert scoped.status_code == 201 and scoped.json()["task_ids"] == ["t1"]


def test_a_token_stored_with_no_task_reads_none(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/tokens.db")
    create_tables(engine)
    with Session(engine) as session:
        _, token = issue_token(session, "nobody's", Role.AUDITOR, [])
        principal = principal_for(session, token)
    assert principal is not None and not principal.can_read("any-task")
