"""The Label Studio backend's translations (label config, frame names, percent ↔ pixels) and
its refusals on a real database (SQLite): origins not named, new projects without an admin,
labels that changed under a task, callers without a token."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session

from labeler_assist.models import AssistFrame, AssistJob, StudioProject
from labeler_assist.preannotation import ModelServer
from labeler_assist.projections import PROJECTION
from labeler_assist.studio import (
    StudioConfig,
    StudioError,
    annotator,
    boxes_from_results,
    frame_name,
    model_version,
    parse_label_config,
    prediction_score,
    project_id,
    results_from_boxes,
    studio_task,
)
from labeler_assist.studio_bridge import PART, StudioBridge, StudioRefused
from labeler_assist.studio_client import allowed_origins, origin
from labeler_assist.studio_routes import router
from labelloop.auth import Principal, Role
from labelloop.composition import projections
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import Transactions
from labelloop.tasks import Task

CONFIG = (
    '<View><Image name="img" value="$photo"/>'
    '<Choices name="kind" toName="img"><Choice value="x"/></Choices>'
    '<RectangleLabels name="objects" toName="img">'
    '<Label value="car"/><Label value="person"/><Label value="car"/></RectangleLabels></View>'
)
STUDIO = "http://studio.example:8080"
ADMIN = Principal("admin", Role.ADMIN)


def rect(
    x: float, y: float, w: float, h: float, label: str = "car", **extra: Any
) -> dict[str, Any]:
    value = {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label], **extra}
    return {"type": "rectanglelabels", "from_name": "objects", "to_name": "img", "value": value}


def test_label_config_names_the_boxes_control_and_its_labels() -> None:
    config = parse_label_config(CONFIG)
    assert config == StudioConfig("objects", "img", "photo", ("car", "person"))


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        ("<View><Image name='i' value='$image'/></View>", "no RectangleLabels"),
        ("<View><RectangleLabels name='r' toName='i'><Label value='a'/></RectangleLabels>", "XML"),
        (
            "<View><Image name='i' value='$image'/><RectangleLabels name='r' toName='i'>"
            "</RectangleLabels></View>",
            "names no Label",
        ),
        (
            "<View><Image name='i' value='http://x/a.jpg'/><RectangleLabels name='r' toName='i'>"
            "<Label value='a'/></RectangleLabels></View>",
            "no RectangleLabels",
        ),
        (
            '<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            "<View>&b;</View>",
            "not XML",
        ),
    ],
)
def test_label_configs_labelloop_cannot_serve_are_refused(xml: str, says: str) -> None:
    with pytest.raises(StudioError, match=says):
        parse_label_config(xml)


def test_project_ids_and_frame_names() -> None:
    assert project_id("12.1733131200") == 12
    assert project_id(7) == 7
    with pytest.raises(StudioError):
        project_id("../etc")
    assert frame_name(17, "/data/upload/1/4c49-Photo.PNG?x=1") == "ls-17.png"
    assert frame_name(18, "s3://bucket/no-suffix") == "ls-18"
    assert frame_name(19, "/data/a.txt") == "ls-19"
    assert [studio_task(n) for n in ("ls-17.png", "ls-18", "frame-1.png", "ls-x.png")] == [
        17,
        18,
        None,
        None,
    ]


def test_rectangles_in_percent_become_pixels_cut_to_the_frame() -> None:
    config = parse_label_config(CONFIG)
    boxes = boxes_from_results(
        [
            rect(10, 20, 30, 40),
            rect(90, 90, 20, 20, "person"),  # reaches past the corner: cut
            rect(120, 10, 5, 5),  # wholly outside: dropped
            {"type": "choices", "from_name": "kind", "value": {"choices": ["x"]}},
        ],
        config,
        "ls-1.png",
        200,
        100,
    )
    assert boxes == [
        {"label": "car", "x": 20.0, "y": 20.0, "w": 60.0, "h": 40.0},
        {"label": "person", "x": 180.0, "y": 90.0, "w": 20.0, "h": 10.0},
    ]


def test_a_rotated_rectangle_becomes_its_axis_aligned_extent() -> None:
    config = parse_label_config(CONFIG)
    [box] = boxes_from_results(
        [rect(50, 10, 20, 10, rotation=90)], config, "ls-1.png", 100, 100
    )  # turned about its top-left corner: now 10 wide, 20 tall, left of x=50
    assert box == pytest.approx({"label": "car", "x": 40.0, "y": 10.0, "w": 10.0, "h": 20.0})


@pytest.mark.parametrize(
    ("result", "says"),
    [
        (rect(1, 1, 5, 5, "truck"), "not one of"),
        ({**rect(1, 1, 5, 5), "value": {"x": 1, "rectanglelabels": ["car"]}}, "no x, y"),
        (
            {**rect(1, 1, 5, 5), "value": {**rect(1, 1, 5, 5)["value"], "rectanglelabels": []}},
            "has 0 labels",
        ),
        (rect(float("nan"), 1, 5, 5), "not finite"),
    ],
)
def test_rectangles_labelloop_cannot_take_are_refused(result: dict[str, Any], says: str) -> None:
    with pytest.raises(StudioError, match=says):
        boxes_from_results([result], parse_label_config(CONFIG), "ls-1.png", 100, 100)


def test_predictions_come_back_as_the_boxes_they_were() -> None:
    config = parse_label_config(CONFIG)
    scored = [{"label": "person", "x": 12.5, "y": 30.0, "w": 40.0, "h": 25.0, "score": 0.8}]
    results = results_from_boxes(scored, config, 160, 120)
    assert results[0]["score"] == 0.8 and results[0]["value"]["rectanglelabels"] == ["person"]
    back = boxes_from_results(results, config, "ls-3.png", 160, 120)
    assert back == [pytest.approx({k: v for k, v in scored[0].items() if k != "score"})]


def test_scores_versions_and_authors() -> None:
    boxes = [{"score": 0.9}, {"score": 0.5}]
    assert prediction_score(boxes, None) == pytest.approx(0.7)
    assert prediction_score(boxes, 0.25) == pytest.approx(0.75)
    assert prediction_score([], None) == 0.0
    assert model_version(None) == "labelloop-untrained" and model_version(3) == "labelloop-v3"
    assert annotator({"created_username": " Ann Lee ann@x.org, 4"}) == "label-studio:ann@x.org"
    assert annotator({"completed_by": 9}) == "label-studio:user-9"


def test_origins_are_compared_without_paths_or_case() -> None:
    assert origin("HTTP://Studio.Example:8080/projects/3/") == "http://studio.example:8080"
    assert allowed_origins(" http://a:1/ , ,https://b") == {"http://a:1", "https://b"}


@pytest.fixture
def bridge(tmp_path: Path) -> StudioBridge:
    engine = get_engine(f"sqlite:///{tmp_path}/studio.db")
    projections()
    create_tables(engine)
    settings = Settings(label_studio_urls=f"{STUDIO}, http://other:1")
    transactions = Transactions(engine, topic_name=str)
    server = ModelServer(settings, None, transactions.bound(PROJECTION))  # type: ignore[arg-type]
    return StudioBridge(settings, None, transactions, server)  # type: ignore[arg-type]


def test_a_connection_is_refused_with_its_reason(bridge: StudioBridge) -> None:
    with pytest.raises(StudioRefused, match="LABELLOOP_LABEL_STUDIO_URLS") as unnamed:
        bridge.connect(ADMIN, "1.5", CONFIG, "http://evil.example", "tok")
    assert unnamed.value.status == 403
    annotator_ = Principal("ann", Role.ANNOTATOR)
    with pytest.raises(StudioRefused, match="admin") as not_admin:
        bridge.connect(annotator_, "1.5", CONFIG, STUDIO, "tok")
    assert not_admin.value.status == 403
    with pytest.raises(StudioRefused, match="access_token"):
        bridge.connect(ADMIN, "1.5", CONFIG, STUDIO, "")
    with pytest.raises(StudioError):
        bridge.connect(ADMIN, "1.5", "<View/>", STUDIO, "tok")


def test_a_project_reconnects_with_a_new_token_but_not_new_labels(bridge: StudioBridge) -> None:
    first = bridge.connect(ADMIN, "4.1", CONFIG, STUDIO + "/", "tok-1")
    assert (first.origin, first.project, first.task_id) == (STUDIO, 4, None)
    with Session(bridge.engine) as session:  # as a sync leaves it
        session.add(Task(id="t4", name="ls", labels=["car", "person"], created_by="admin"))
        row = session.get(StudioProject, (STUDIO, 4))
        assert row is not None
        row.task_id = "t4"
        session.add(row)
        session.commit()
    again = bridge.connect(ADMIN, "4.1", CONFIG, STUDIO, "tok-2")
    assert (again.token, again.task_id) == ("tok-2", "t4")
    reader = Principal("aud", Role.AUDITOR, frozenset({"t4"}))
    kept = bridge.connect(reader, "4.1", CONFIG, STUDIO, "tok-from-an-auditor")
    assert kept.token == "tok-2", "a non-admin uses the connection and changes nothing"
    outsider = Principal("ann", Role.ANNOTATOR, frozenset({"other"}))
    with pytest.raises(StudioRefused) as hidden:
        bridge.connect(outsider, "4.1", CONFIG, STUDIO, "tok-3")
    assert hidden.value.status == 404
    changed = CONFIG.replace('<Label value="person"/>', '<Label value="bike"/>')
    with pytest.raises(StudioRefused, match="labels are fixed") as relabeled:
        bridge.connect(ADMIN, "4.1", changed, STUDIO, "tok-2")
    assert relabeled.value.status == 409


def test_predictions_before_a_model_are_empty_with_the_untrained_version(
    bridge: StudioBridge,
) -> None:
    connection = bridge.connect(ADMIN, "5.1", CONFIG, STUDIO, "tok")
    version, results = asyncio.run(bridge.predictions(connection, [1, 2]))
    assert version is None
    assert results == [{"result": [], "score": 0.0, "model_version": "labelloop-untrained"}] * 2


def test_annotations_wait_for_their_frame_and_job(bridge: StudioBridge) -> None:
    """Labels are submitted only for frames whose job is known; the rest stay to do."""
    with Session(bridge.engine) as session:
        session.add(Task(id="t6", name="ls", labels=["car", "person"], created_by="admin"))
        session.add(
            AssistFrame(task_id="t6", name="ls-1.png", object_key="k", width=100, height=50)
        )
        session.add(
            AssistFrame(task_id="t6", name="ls-2.png", object_key="k", width=100, height=50)
        )
        session.add(AssistJob(id="j6", task_id="t6", frames=["ls-1.png"]))
        session.commit()
    connection = bridge.connect(ADMIN, "6.1", CONFIG, STUDIO, "tok")
    connection = dataclasses.replace(connection, task_id="t6")
    annotation = {"result": [rect(10, 10, 50, 50)], "created_username": " a@x.org, 1"}
    done = bridge._submit(connection, "t6", {1: annotation, 2: annotation, 3: annotation})
    assert done == [1]
    with Session(bridge.engine) as session:
        from labeler_assist.models import Annotation

        taken = session.get(Annotation, ("t6", "ls-1.png"))
    assert taken is not None and taken.submitted_by == "label-studio:a@x.org"
    assert taken.boxes == [{"label": "car", "x": 10.0, "y": 5.0, "w": 50.0, "h": 25.0}]
    assert bridge._submit(connection, "t6", {1: annotation}) == [1]  # the same again: no event


def _app(bridge: StudioBridge) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    parts = {PART: bridge}  # the process's bridge, as register() leaves it
    app.state.runtime = SimpleNamespace(settings=bridge.settings, engine=bridge.engine, parts=parts)
    return TestClient(app)


def test_setup_and_predict_need_a_labelloop_token(bridge: StudioBridge) -> None:
    http = _app(bridge)
    body = {"project": "1.1", "schema": CONFIG, "hostname": STUDIO, "access_token": "t"}
    assert http.get("/integrations/label-studio/health").json()["status"] == "UP"
    assert http.post("/integrations/label-studio/setup", json=body).status_code == 401
    wrong = base64.b64encode(b"ls:llt_nope").decode()
    answered = http.post(
        "/integrations/label-studio/setup", json=body, headers={"Authorization": f"Basic {wrong}"}
    )
    assert answered.status_code == 401
    assert http.post("/integrations/label-studio/predict", json={"tasks": []}).status_code == 401
    bridge.connect(ADMIN, "1.1", CONFIG, STUDIO, "t")
    with Session(bridge.engine) as session:
        row = session.get(StudioProject, (STUDIO, 1))
        assert row is not None
        row.task_id, row.synced = "t1", True
        session.add(row)
        session.commit()
    # a credential-less webhook learns nothing of what is connected, nor of a task's state
    for project in (1, 999):
        hook = {"action": "START_TRAINING", "project": {"id": project}}
        answer = http.post("/integrations/label-studio/webhook", json=hook)
        assert answer.json() == {"status": "accepted"}
    admin = {"Authorization": f"Bearer {bridge.settings.admin_token}"}
    hook = {"action": "START_TRAINING", "project": {"id": 1}}
    state = http.post("/integrations/label-studio/webhook", json=hook, headers=admin).json()
    assert state["task_id"] == "t1" and state["labeled_frames"] == 0


def test_setup_with_the_admin_token_connects(bridge: StudioBridge) -> None:
    http = _app(bridge)
    basic = base64.b64encode(f"any:{bridge.settings.admin_token}".encode()).decode()
    body = {"project": "2.1", "schema": CONFIG, "hostname": STUDIO, "access_token": "t"}
    answered = http.post(
        "/integrations/label-studio/setup", json=body, headers={"Authorization": f"Basic {basic}"}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"model_version": "labelloop-untrained"}
    with Session(bridge.engine) as session:
        row = session.get(StudioProject, (STUDIO, 2))
    assert row is not None and row.connected_by == "admin" and row.token == "t"
    elsewhere = {**body, "hostname": "http://10.0.0.1"}
    refused = http.post(
        "/integrations/label-studio/setup",
        json=elsewhere,
        headers={"Authorization": f"Basic {basic}"},
    )
    assert refused.status_code == 403 and "LABELLOOP_LABEL_STUDIO_URLS" in refused.text


def test_extra_params_set_the_task_or_are_refused() -> None:
    from labeler_assist.studio_bridge import task_params

    config = parse_label_config(CONFIG)
    assert task_params(None, config) == {}
    assert task_params({"label_threshold": 40, "priority": 0}, config) == {
        "label_threshold": 40,
        "priority": 0,
    }
    with pytest.raises(StudioRefused, match="unknown extra params"):
        task_params({"epochs": 3}, config)
    with pytest.raises(StudioRefused, match="label_threshold"):
        task_params({"label_threshold": 0}, config)
    with pytest.raises(StudioRefused, match="JSON object"):
        task_params([1], config)


def test_one_model_server_per_process_for_the_subscribers_and_the_routes(tmp_path: Path) -> None:
    from labeler_assist.studio_bridge import process_bridge
    from labelloop.serve import build_app

    settings = Settings(database_url=f"sqlite:///{tmp_path}/one.db")
    runtime = build_app(settings, ["labeler-assist"]).state.runtime
    registered = runtime.parts[PART]
    assert process_bridge(runtime) is registered, "the routes get register()'s bridge"
    routed_only = build_app(settings, ["api"]).state.runtime  # the api pod routes it too
    assert PART not in routed_only.parts
    assert process_bridge(routed_only) is process_bridge(routed_only), "made once, then kept"
