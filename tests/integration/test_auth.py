"""Tokens with roles on the running API: what an annotator, an auditor and an admin may do."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlmodel import Session

from labeler_assist.models import AssistJob
from labelloop.client import LabelloopClient
from labelloop.db import get_engine
from tests.integration.harness import ApiServer

pytestmark = pytest.mark.integration


def call(api: ApiServer, token: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method,
        api.url + path,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
        **kwargs,  # type: ignore[arg-type]
    )


def test_roles_and_task_scopes(api: ApiServer, client: LabelloopClient) -> None:
    task_a = client.request("POST", "/api/tasks", json={"name": "a", "labels": ["car"]})["id"]
    task_b = client.request("POST", "/api/tasks", json={"name": "b", "labels": ["car"]})["id"]
    with Session(get_engine(api.settings.database_url)) as session:
        for task in (task_a, task_b):
            session.add(AssistJob(id=f"{task}-job", task_id=task, frames=["f.jpg"]))
        session.commit()

    def issue(role: str, tasks: list[str] | None = None) -> dict[str, Any]:
        body = {"name": f"{role}-1", "role": role, "task_ids": tasks}
        return client.request("POST", "/api/tokens", json=body)

    annotator = issue("annotator", [task_a])
    auditor = issue("auditor")
    auditor_b = issue("auditor", [task_b])
    assert annotator["token"].startswith("llt_") and annotator["task_ids"] == [task_a]
    listed = client.request("GET", "/api/tokens")
    assert {t["id"] for t in listed} >= {annotator["id"], auditor["id"]}
    assert all("token" not in t for t in listed), "tokens are shown only at creation"

    a_token = annotator["token"]
    assert call(api, a_token, "GET", f"/api/tasks/{task_a}").status_code == 200
    # another task is indistinguishable from a missing one
    other = call(api, a_token, "GET", f"/api/tasks/{task_b}")
    assert other.status_code == 404 and other.json() == {"detail": f"no task {task_b}"}
    for path in (
        f"/api/tasks/{task_b}/events",
        f"/api/tasks/{task_b}/jobs",
        f"/api/tasks/{task_b}/frames",
        f"/api/tasks/{task_b}/models",
        f"/api/tasks/{task_b}/next-frames",
        f"/api/tasks/{task_b}/label-issues",
        f"/api/jobs/{task_b}-job/annotations",
        f"/api/jobs/{task_b}-job/preannotations",
    ):
        assert call(api, a_token, "GET", path).status_code == 404, path
    labels = {"frames": [{"frame": "f.jpg", "boxes": []}]}
    assert (
        call(api, a_token, "PUT", f"/api/jobs/{task_b}-job/annotations", json=labels).status_code
        == 404
    )
    assert call(api, a_token, "GET", f"/api/jobs/{task_a}-job/annotations").status_code == 200
    ranked = call(api, a_token, "GET", f"/api/tasks/{task_a}/next-frames").json()
    assert ranked == {"model_version": None, "strategy": "spread", "frames": []}
    unchecked = call(api, a_token, "GET", f"/api/tasks/{task_a}/label-issues")
    assert unchecked.status_code == 409 and "no model has checked" in unchecked.json()["detail"]
    # admin-only routes
    assert (
        call(api, a_token, "POST", "/api/tasks", json={"name": "x", "labels": ["y"]}).status_code
        == 403
    )
    assert call(api, a_token, "GET", "/api/webhooks").status_code == 403
    assert call(api, a_token, "GET", "/api/tokens").status_code == 403
    uploads = call(api, a_token, "POST", f"/api/tasks/{task_a}/uploads", json={"files": ["f.jpg"]})
    assert uploads.status_code == 403

    # the auditor reads every task and changes nothing
    for task in (task_a, task_b):
        assert call(api, auditor["token"], "GET", f"/api/tasks/{task}/events").status_code == 200
    refused = call(api, auditor["token"], "PUT", f"/api/jobs/{task_a}-job/annotations", json=labels)
    assert refused.status_code == 403
    assert call(api, auditor_b["token"], "GET", f"/api/tasks/{task_a}").status_code == 404
    assert call(api, auditor_b["token"], "GET", f"/api/tasks/{task_b}").status_code == 200

    # unknown and revoked tokens are refused
    assert call(api, "llt_nope", "GET", f"/api/tasks/{task_a}").status_code == 401
    client.request("DELETE", f"/api/tokens/{annotator['id']}")
    assert call(api, a_token, "GET", f"/api/tasks/{task_a}").status_code == 401
    bad_scope = {"name": "root", "role": "admin", "task_ids": [task_a]}
    assert (
        call(api, api.settings.admin_token, "POST", "/api/tokens", json=bad_scope).status_code
        == 422
    )
