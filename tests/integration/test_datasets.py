"""Datasets out and in on the real stack (issue 18): a live task's labels exported through the
api in every format, read back, and imported into a new task whose labels are the same."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from labelloop.client import LabelloopClient, LabelloopError
from labelloop.datasets import FORMATS, extract_zip, read_dataset
from labelloop.importer import import_dataset
from tests.integration.harness import make_frames, wait_until

pytestmark = pytest.mark.integration

LABELS = ["car", "bus"]


def labels_of(client: LabelloopClient, job_id: str) -> dict[str, list[Any]]:
    body = client.request("GET", f"/api/jobs/{job_id}/annotations")
    return {
        entry["frame"]: sorted(
            [
                (b["label"], round(b["x"], 1), round(b["y"], 1), round(b["w"], 1), round(b["h"], 1))
                for b in entry["boxes"]
            ]
        )
        for entry in body["frames"]
    }


def exported(client: LabelloopClient, task_id: str, fmt: str, root: Path) -> dict[str, Any]:
    buffer = io.BytesIO()
    client.download(f"/api/tasks/{task_id}/export", buffer, params={"format": fmt})
    buffer.seek(0)
    extract_zip(buffer, root, max_bytes=50_000_000)
    record: dict[str, Any] = json.loads((root / "labelloop.json").read_text())
    return record


def test_export_every_format_and_import_it_back(
    client: LabelloopClient, tmp_path: Path, api: Any
) -> None:
    created = client.create_task(
        "to-export",
        LABELS,
        make_frames(tmp_path / "frames", 8),
        label_threshold=1000,
        timeout_s=90,
    )
    [job] = created.jobs
    task_id = created.task["id"]
    submitted = [
        {"frame": name, "boxes": [{"label": LABELS[i % 2], "x": 8 + i, "y": 8, "w": 22, "h": 20}]}
        for i, name in enumerate(job["frames"][:5])
    ] + [{"frame": job["frames"][5], "boxes": []}]  # checked and found empty
    assert wait_until(lambda: _put(client, job["id"], submitted))
    truth = labels_of(client, job["id"])
    assert len(truth) == 6

    for fmt in sorted(FORMATS):
        root = tmp_path / f"export-{fmt}"
        record = exported(client, task_id, fmt, root)
        assert (record["frames"], record["labeled"], record["skipped"]) == (6, 6, []), fmt
        back = read_dataset(fmt, root)  # type: ignore[arg-type]
        assert set(back.labels) <= set(LABELS)
        assert {
            item.name: sorted(
                (b.label, round(b.x, 1), round(b.y, 1), round(b.w, 1), round(b.h, 1))
                for b in item.labels or ()
            )
            for item in back.items
        } == truth, fmt

    # a new task from the COCO export: same frames, same labels, submitted by the importer
    root = tmp_path / "export-coco"
    outcome = import_dataset(
        client,
        read_dataset("coco", root),
        root,
        Console(quiet=True),
        name="imported",
        label_threshold=1000,
    )
    assert (outcome.frames, outcome.labeled, outcome.rejected) == (6, 6, [])
    assert outcome.task["labels"] == LABELS
    [new_job] = client.request("GET", f"/api/tasks/{outcome.task['id']}/jobs")
    assert labels_of(client, new_job["id"]) == truth

    def submissions() -> list[dict[str, Any]]:  # the timeline's consumer records them a bit later
        events = client.request("GET", f"/api/tasks/{outcome.task['id']}/events")
        return [e for e in events if e["type"] == "io.labelloop.labels.submitted.v1"]

    assert wait_until(submissions, timeout_s=30)
    assert {e["data"]["submitted_by"] for e in submissions()} == {"admin"}


def _put(client: LabelloopClient, job_id: str, frames: list[dict[str, Any]]) -> bool:
    try:
        client.request("PUT", f"/api/jobs/{job_id}/annotations", json={"frames": frames})
        return True
    except LabelloopError:
        return False


def test_export_refuses_what_it_cannot_do(client: LabelloopClient, api: Any) -> None:
    task_id = client.request("POST", "/api/tasks", json={"name": "x", "labels": ["car"]})["id"]
    other = client.request("POST", "/api/tasks", json={"name": "y", "labels": ["car"]})["id"]
    token = client.request(
        "POST", "/api/tokens", json={"name": "aud", "role": "auditor", "task_ids": [other]}
    )["token"]

    def get(params: dict[str, str], bearer: str = api.settings.admin_token) -> httpx.Response:
        return httpx.get(
            f"{api.url}/api/tasks/{task_id}/export",
            params=params,
            headers={"Authorization": f"Bearer {bearer}"},
            timeout=30,
        )

    assert get({"format": "tfrecord"}).status_code == 422
    assert get({"format": "coco", "include": "labels,secrets"}).status_code == 422
    assert get({"format": "coco"}, token).status_code == 404  # outside its tasks: as if missing
    empty = get({"format": "yolo", "include": "labels,preannotations"})
    assert empty.status_code == 200
    with zipfile.ZipFile(io.BytesIO(empty.content)) as archive:
        record = json.loads(archive.read("labelloop.json"))
        assert record["frames"] == 0 and "data.yaml" in archive.namelist()
