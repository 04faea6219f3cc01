"""The model-in-the-loop, on the real stack: labels → threshold → training → ONNX → Triton →
pre-annotations on the frames nobody labeled, and never on another task's frames."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labelloop.audit import UnknownTask, task_audit
from labelloop.client import LabelloopClient
from labelloop.composition import projections
from labelloop.datasets import Box
from labelloop.db import get_engine
from labelloop_tools.synthetic import annotations_body, write_synthetic_frames
from tests.integration.harness import ApiServer, wait_until
from tests.integration.replay_check import assert_replay_matches, wait_quiet

pytestmark = [pytest.mark.integration, pytest.mark.training]

LABELED, HELD_OUT = 40, 12
PUBLISHED = "io.labelloop.model.published.v1"
STARTED = "io.labelloop.training.started.v1"


def iou(a: dict[str, Any], b: Box) -> float:
    ax2, ay2, bx2, by2 = a["x"] + a["w"], a["y"] + a["h"], b.x + b.w, b.y + b.h
    inter_w = max(0.0, min(ax2, bx2) - max(a["x"], b.x))
    inter_h = max(0.0, min(ay2, by2) - max(a["y"], b.y))
    inter = inter_w * inter_h
    return inter / (a["w"] * a["h"] + b.w * b.h - inter)


def events(client: LabelloopClient, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.request("GET", f"/api/tasks/{task_id}/events") if e["type"] == kind]


def test_labels_train_a_model_that_preannotates_the_rest(
    client: LabelloopClient,
    api: ApiServer,
    tmp_path: Path,
    new_database_url: Callable[[], str],
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    truth = write_synthetic_frames(tmp_path / "a", range(LABELED + HELD_OUT))
    task_a = client.create_task(
        "loop",
        ["box"],
        sorted((tmp_path / "a").iterdir()),
        label_threshold=LABELED,
        priority=0,
        timeout_s=120,
    )
    write_synthetic_frames(tmp_path / "b", range(100, 110))
    task_b = client.create_task(
        "other", ["box"], sorted((tmp_path / "b").iterdir()), label_threshold=LABELED, timeout_s=120
    )
    [job] = task_a.jobs
    labeled = job["frames"][:LABELED]
    client.request(
        "PUT",
        f"/api/jobs/{job['id']}/annotations",
        json=annotations_body(labeled, truth),
    )

    task_id = task_a.task["id"]
    assert wait_until(lambda: events(client, task_id, PUBLISHED), timeout_s=900, interval_s=2), (
        client.request("GET", f"/api/tasks/{task_id}/events")[-3:]
    )
    progress = [e["data"]["epoch"] for e in events(client, task_id, STARTED)]
    assert progress[0] == 0 and max(progress) >= 1, "training reports progress per epoch"
    [model] = client.request("GET", f"/api/tasks/{task_id}/models")
    assert model["status"] == "published" and model["current"] and model["version"] == 1
    assert model["metrics"]["map50"] > 0.5

    held_out = [name for name in job["frames"] if name not in labeled]

    def preannotated() -> list[dict[str, Any]]:
        return client.request("GET", f"/api/jobs/{job['id']}/preannotations")["frames"]

    assert wait_until(lambda: len(preannotated()) == HELD_OUT, timeout_s=120)
    frames = {f["frame"]: f for f in preannotated()}
    assert set(frames) == set(held_out), "labeled frames are not pre-annotated"
    found = total = 0
    for name in held_out:
        assert frames[name]["model_version"] == 1
        for box in truth[name]:
            total += 1
            found += any(
                p["label"] == "box" and p["score"] >= 0.25 and iou(p, box) >= 0.5
                for p in frames[name]["boxes"]
            )
    assert found / total >= 0.8, f"recall on held-out frames {found}/{total}"
    ready_type = "io.labelloop.preannotation.ready.v1"
    assert wait_until(lambda: len(events(client, task_id, ready_type)) == HELD_OUT)
    ready = events(client, task_id, ready_type)
    assert len(ready) == HELD_OUT and {e["data"]["backend"] for e in ready} == {"triton"}

    # task isolation: task B has no model, so nothing of A's ever reaches B's frames
    [job_b] = task_b.jobs
    assert client.request("GET", f"/api/jobs/{job_b['id']}/preannotations")["frames"] == []
    assert client.request("GET", f"/api/tasks/{task_b.task['id']}/models") == []

    # the audit: who labeled which frame, which model version pre-annotated which frame
    audit = task_audit(get_engine(api.settings.database_url), task_id, projections())
    assert audit["task"]["id"] == task_id and audit["task"]["created_by"] == "admin"
    assert {a["frame"] for a in audit["annotations"]} == set(labeled)
    assert {a["submitted_by"] for a in audit["annotations"]} == {"admin"}
    assert {(p["frame"], p["model_version"]) for p in audit["preannotations"]} == {
        (name, 1) for name in held_out
    }
    assert [(m["version"], m["status"]) for m in audit["models"]] == [(1, "published")]
    by_id = {e["id"]: e for e in audit["events"]}
    published = next(e for e in audit["events"] if e["type"] == PUBLISHED)
    for event in audit["events"]:
        if event["type"] == ready_type:
            assert by_id[event["causationid"]]["type"] in {PUBLISHED, "io.labelloop.job.created.v1"}
    assert any(
        e["type"] == ready_type and e["causationid"] == published["id"] for e in audit["events"]
    ), "pre-annotations link to the model.published event that caused them"
    with pytest.raises(UnknownTask):
        task_audit(get_engine(api.settings.database_url), "no-such-task", projections())
    command = ["audit", "task", task_id, "--json", "--db", api.settings.database_url]
    printed = subprocess.run(
        [sys.executable, "-m", "labelloop", *command],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    document = json.loads(printed.stdout)
    assert document["task"] == audit["task"] and document["models"] == audit["models"]
    assert [e["id"] for e in document["events"]][: len(audit["events"])] == list(by_id)

    check_guidance(client, task_id, job, held_out, labeled, truth, frames)

    # the whole loop rebuilt from Kafka alone: models, pre-annotations and label checks included
    tasks = [task_id, task_b.task["id"]]
    wait_quiet(get_engine(api.settings.database_url), tasks)
    live, _ = assert_replay_matches(api.settings.database_url, new_database_url, since, tasks)
    assert len(live["preannotations"]) == HELD_OUT and len(live["model_versions"]) == 1
    assert sum(len(row["boxes"]) for row in live["preannotations"]) >= found


RANKED = "io.labelloop.frames.ranked.v1"
ISSUES = "io.labelloop.labels.issues-found.v1"


def check_guidance(
    client: LabelloopClient,
    task_id: str,
    job: dict[str, Any],
    held_out: list[str],
    labeled: list[str],
    truth: dict[str, list[Box]],
    preannotated: dict[str, dict[str, Any]],
) -> None:
    """What to label next and which labels look wrong, after the first model."""
    assert wait_until(lambda: events(client, task_id, RANKED), timeout_s=60)
    [ranked] = events(client, task_id, RANKED)
    assert ranked["data"]["model_version"] == 1 and ranked["data"]["strategy"] == "uncertainty"
    assert ranked["data"]["unlabeled"] == HELD_OUT
    assert {f["frame"] for f in ranked["data"]["frames"]} == set(held_out)
    answer = client.request("GET", f"/api/tasks/{task_id}/next-frames?limit=5")
    assert answer["model_version"] == 1 and answer["strategy"] == "uncertainty"
    assert [f["frame"] for f in answer["frames"]] == [
        f["frame"] for f in ranked["data"]["frames"][:5]
    ], "the route and the event rank alike"
    scores = [f["score"] for f in answer["frames"]]
    assert scores == sorted(scores, reverse=True)

    # the first model checked the labeled frames it did not train on (its val split)
    assert wait_until(lambda: events(client, task_id, ISSUES), timeout_s=60)
    [first] = events(client, task_id, ISSUES)
    checked = {c["frame"] for c in first["data"]["checked"]}
    assert first["data"]["trigger"] == "model.published" and checked
    assert checked < set(labeled), "frames it trained on are not checked by it"
    before = client.request("GET", f"/api/tasks/{task_id}/label-issues")
    assert before["model_version"] == 1 and before["checked"] == len(checked)

    # new labels with mistakes, checked at once by the model (which never saw those frames)
    def sure(name: str) -> bool:
        boxes = preannotated[name]["boxes"]
        return bool(truth[name]) and all(
            any(p["score"] >= 0.6 and iou(p, box) >= 0.6 for p in boxes) for box in truth[name]
        )

    dropped, padded = [name for name in held_out if sure(name)][:2]
    empty = next(
        Box("box", x, y, 24, 24)
        for x in range(4, 160, 12)
        for y in range(4, 110, 12)
        if all(
            iou({"x": x, "y": y, "w": 24, "h": 24}, b) == 0
            for b in truth[padded]
            + [Box("box", p["x"], p["y"], p["w"], p["h"]) for p in preannotated[padded]["boxes"]]
        )
    )
    wrong = {
        "frames": [
            {"frame": dropped, "boxes": [b.api_shape() for b in truth[dropped][1:]]},
            {"frame": padded, "boxes": [b.api_shape() for b in [*truth[padded], empty]]},
        ]
    }
    client.request("PUT", f"/api/jobs/{job['id']}/annotations", json=wrong)

    def submitted_checks() -> list[dict[str, Any]]:
        found = events(client, task_id, ISSUES)
        return [e for e in found if e["data"]["trigger"] == "labels.submitted"]

    assert wait_until(submitted_checks, timeout_s=60)
    issues = client.request("GET", f"/api/tasks/{task_id}/label-issues")["issues"]
    kinds = {(i["frame"], i["kind"]) for i in issues}
    assert (dropped, "missing") in kinds and (padded, "spurious") in kinds, issues
    [spurious] = [i for i in issues if (i["frame"], i["kind"]) == (padded, "spurious")]
    assert (spurious["box"]["x"], spurious["box"]["y"]) == (empty.x, empty.y)
    only = client.request("GET", f"/api/tasks/{task_id}/label-issues?kind=spurious")["issues"]
    assert only and {i["kind"] for i in only} == {"spurious"}

    # fixed: the new labels are checked again and the issues are gone
    client.request(
        "PUT", f"/api/jobs/{job['id']}/annotations", json=annotations_body([dropped, padded], truth)
    )
    assert wait_until(lambda: len(submitted_checks()) == 2, timeout_s=60)
    after = client.request("GET", f"/api/tasks/{task_id}/label-issues")["issues"]
    assert not {(i["frame"], i["kind"]) for i in after} & {
        (dropped, "missing"),
        (padded, "spurious"),
    }
    answer = client.request("GET", f"/api/tasks/{task_id}/next-frames?limit=100")
    assert {f["frame"] for f in answer["frames"]} == set(held_out) - {dropped, padded}
