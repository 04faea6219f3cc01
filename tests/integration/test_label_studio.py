"""labelloop as a real Label Studio's ML backend: connect it, import frames, annotate through
Label Studio's API, and see a model trained by labelloop's queue and its predictions appear in
Label Studio with labelloop's model version, nobody asking."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlmodel import Session

from labeler_assist.models import StudioProject
from labelloop.client import LabelloopClient
from labelloop.datasets import Box
from labelloop.db import get_engine
from labelloop_tools.synthetic import write_synthetic_frames
from tests.integration.harness import ApiServer, wait_until
from tests.integration.label_studio import EMAIL, LabelStudioServer, rectangle

pytestmark = [pytest.mark.integration, pytest.mark.training, pytest.mark.label_studio]

LABELED, HELD_OUT = 40, 12
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="box"/></RectangleLabels></View>'
)
PUBLISHED = "io.labelloop.model.published.v1"
SUBMITTED = "io.labelloop.labels.submitted.v1"


def iou(a: dict[str, Any], b: Box) -> float:
    ax2, ay2, bx2, by2 = a["x"] + a["w"], a["y"] + a["h"], b.x + b.w, b.y + b.h
    inter = max(0.0, min(ax2, bx2) - max(a["x"], b.x)) * max(0.0, min(ay2, by2) - max(a["y"], b.y))
    return inter / (a["w"] * a["h"] + b.w * b.h - inter)


def pixels(result: dict[str, Any], width: int, height: int) -> dict[str, Any]:
    value = result["value"]
    return {
        "x": value["x"] * width / 100,
        "y": value["y"] * height / 100,
        "w": value["width"] * width / 100,
        "h": value["height"] * height / 100,
    }


def events(client: LabelloopClient, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.request("GET", f"/api/tasks/{task_id}/events") if e["type"] == kind]


def test_a_label_studio_project_trains_and_gets_predictions(
    label_studio: LabelStudioServer, api: ApiServer, client: LabelloopClient, tmp_path: Path
) -> None:
    truth = write_synthetic_frames(tmp_path / "frames", range(200, 200 + LABELED + HELD_OUT))
    sizes = {name: Image.open(tmp_path / "frames" / name).size for name in truth}
    backend = f"{api.url}/integrations/label-studio"
    with label_studio.client() as studio:
        project = studio.post("/api/projects", json={"title": "cars", "label_config": CONFIG})
        project_id = project.raise_for_status().json()["id"]

        def connect(password: str, **extra: Any) -> httpx.Response:
            """Settings → Model → Connect Model, with Basic auth."""
            body = {"project": project_id, "url": backend, "title": "labelloop"}
            body |= {"auth_method": "BASIC_AUTH", "basic_auth_user": "label-studio"}
            return studio.post("/api/ml", json={**body, "basic_auth_pass": password, **extra})

        # a bad credential is refused when Label Studio connects (it checks /setup)
        refused = connect("llt_not-a-token")
        assert refused.status_code >= 400 and "401" in refused.text, refused.text
        extra = {"label_threshold": LABELED, "priority": 0}
        connected = connect(api.settings.admin_token, extra_params=extra)
        assert connected.status_code == 201, connected.text
        ml = connected.json()
        assert ml["model_version"] == "labelloop-untrained", ml

        # frames imported after connecting, one form field each (Label Studio keeps one per name)
        files = {
            f"file{i}": (name, (tmp_path / "frames" / name).read_bytes(), "image/jpeg")
            for i, name in enumerate(truth)
        }
        studio.post(f"/api/projects/{project_id}/import", files=files).raise_for_status()
        tasks = studio.get(f"/api/projects/{project_id}/tasks/", params={"page_size": 100}).json()
        by_name = {_original(task["data"]["image"]): task["id"] for task in tasks}
        assert set(by_name) == set(truth)
        names = sorted(truth)
        labeled, held_out = names[:LABELED], names[LABELED:]

        for name in labeled:  # as an annotator's Submit saves them
            width, height = sizes[name]
            result = [rectangle(box, width, height) for box in truth[name]]
            studio.post(
                f"/api/tasks/{by_name[name]}/annotations/", json={"result": result}
            ).raise_for_status()

        engine = get_engine(api.settings.database_url)

        def task_of_project() -> str | None:
            with Session(engine) as session:
                row = session.get(StudioProject, (label_studio.url, project_id))
                return row.task_id if row is not None and row.synced else None

        assert wait_until(task_of_project, timeout_s=180, interval_s=1)
        task_id = task_of_project()
        assert task_id is not None
        task = client.request("GET", f"/api/tasks/{task_id}")
        assert task["labels"] == ["box"] and task["label_threshold"] == LABELED
        assert task["priority"] == 0 and task["created_by"] == "admin"

        def labeled_frames() -> dict[str, Any]:
            submitted = events(client, task_id, SUBMITTED)
            return {
                item["frame"]: (event["data"]["submitted_by"], item["boxes"])
                for event in submitted
                for item in event["data"]["annotations"]
            }

        assert wait_until(lambda: len(labeled_frames()) == LABELED, timeout_s=180, interval_s=1), (
            sorted(labeled_frames())
        )
        for name in labeled:  # percent became pixels, attributed to the Label Studio user
            author, boxes = labeled_frames()[f"ls-{by_name[name]}.jpg"]
            assert author == f"label-studio:{EMAIL}"
            assert boxes == [pytest.approx(box.api_shape()) for box in truth[name]]

        # training ran through labelloop's queue, after the webhooks were answered
        assert wait_until(lambda: events(client, task_id, PUBLISHED), timeout_s=900, interval_s=2)
        [model] = client.request("GET", f"/api/tasks/{task_id}/models")
        assert model["version"] == 1 and model["status"] == "published"

        # predictions arrive in Label Studio for the unlabeled tasks, with labelloop's version
        held_ids = {by_name[name] for name in held_out}

        def pushed() -> list[dict[str, Any]]:
            listed = studio.get("/api/predictions/", params={"task__project": project_id})
            return [p for p in listed.json() if p["model_version"] == "labelloop-v1"]

        assert wait_until(lambda: {p["task"] for p in pushed()} == held_ids, timeout_s=180), sorted(
            p["task"] for p in pushed()
        )
        assert len(pushed()) == HELD_OUT, "each frame's prediction is pushed once"
        found = total = 0
        name_of = {task: name for name, task in by_name.items()}
        for prediction in pushed():
            name = name_of[prediction["task"]]
            width, height = sizes[name]
            boxes = [pixels(r, width, height) for r in prediction["result"]]
            assert 0 <= prediction["score"] <= 1
            for box in truth[name]:
                total += 1
                found += any(iou(b, box) >= 0.5 for b in boxes)
        assert found / total >= 0.8, f"recall of the pushed predictions {found}/{total}"

        # Label Studio asks /predict itself (its "test" of a connected model) and Start Training
        # answers at once where the task stands
        answered = studio.post(f"/api/ml/{ml['id']}/predict/test", params={"random": "true"})
        assert answered.status_code == 200, answered.text
        tested = answered.json()  # what Label Studio sent and what /predict answered
        assert tested["status"] == 200 and tested["error_message"] is None, tested
        [result] = tested["response"]
        assert result["model_version"] == "labelloop-v1"
        if tested["task"]["id"] in held_ids:  # an unlabeled task: the model's boxes for it
            assert result["result"] and result["result"][0]["type"] == "rectanglelabels"
        setup = httpx.post(
            f"{backend}/setup",
            json={
                "project": f"{project_id}.1",
                "schema": CONFIG,
                "hostname": label_studio.url,
                "access_token": label_studio.token,
            },
            headers={"Authorization": _basic(api.settings.admin_token)},
        )
        assert setup.json() == {"model_version": "labelloop-v1"}
        state = httpx.post(
            f"{backend}/webhook",
            json={"action": "START_TRAINING", "project": {"id": project_id}},
            headers={"Authorization": _basic(api.settings.admin_token)},
        ).json()
        assert state["labeled_frames"] == LABELED and state["next_training_at"] == 2 * LABELED


def _basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"label-studio:{token}".encode()).decode()


def _original(url: str) -> str:
    """The file name Label Studio was given (it prefixes a hash: ``/data/upload/1/ab12-x.jpg``)."""
    return url.rsplit("/", 1)[-1].split("-", 1)[1]
