"""Labels through the API; a label-threshold event per crossing, exactly once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from labelloop.client import LabelloopClient, LabelloopError
from tests.integration.harness import make_frames, wait_until

pytestmark = pytest.mark.integration

THRESHOLD = "io.labelloop.labels.threshold-reached.v1"
SUBMITTED = "io.labelloop.labels.submitted.v1"


def box(
    x: float = 8, y: float = 8, w: float = 22, h: float = 22, label: str = "car"
) -> dict[str, Any]:
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def events_of(client: LabelloopClient, task_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in client.request("GET", f"/api/tasks/{task_id}/events") if e["type"] == kind]


@pytest.fixture
def job(client: LabelloopClient, tmp_path: Path) -> dict[str, Any]:
    created = client.create_task(
        "labels", ["car", "bus"], make_frames(tmp_path, 24), label_threshold=5, timeout_s=90
    )
    [job] = created.jobs
    # labeler-assist learns frames and jobs from events: wait until it knows this job
    assert wait_until(lambda: _known(client, job["id"]))
    return job


def _known(client: LabelloopClient, job_id: str) -> bool:
    try:
        client.request("GET", f"/api/jobs/{job_id}/annotations")
        return True
    except LabelloopError:
        return False


def put(client: LabelloopClient, job_id: str, frames: list[str], **box_args: Any) -> dict[str, Any]:
    return client.request(
        "PUT",
        f"/api/jobs/{job_id}/annotations",
        json={"frames": [{"frame": name, "boxes": [box(**box_args)]} for name in frames]},
    )


def test_threshold_crossings_are_announced_once(
    client: LabelloopClient, job: dict[str, Any]
) -> None:
    frames, task_id = job["frames"], job["task_id"]
    put(client, job["id"], frames[:5])
    assert wait_until(lambda: len(events_of(client, task_id, THRESHOLD)) == 1)
    put(client, job["id"], frames[:5], x=1)  # relabeling the same frames is no new progress
    put(client, job["id"], frames[5:9])
    assert wait_until(lambda: len(events_of(client, task_id, SUBMITTED)) == 3)
    assert len(events_of(client, task_id, THRESHOLD)) == 1

    # 15 more frames from 15 concurrent requests: crossings 2, 3 and 4, once each
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: put(client, job["id"], [name]), frames[9:24]))
    assert wait_until(lambda: len(events_of(client, task_id, THRESHOLD)) == 4)
    crossings = sorted(e["data"]["crossing"] for e in events_of(client, task_id, THRESHOLD))
    assert crossings == [1, 2, 3, 4]
    assert events_of(client, task_id, THRESHOLD)[-1]["data"]["labeled_frames"] == 20

    saved = client.request("GET", f"/api/jobs/{job['id']}/annotations")["frames"]
    assert [f["frame"] for f in saved] == frames
    assert saved[0]["boxes"] == [box(x=1)]


@pytest.mark.parametrize(
    ("frame_box", "message"),
    [
        (box(label="plane"), "not one of the task's"),
        (box(x=50, w=20), "leaves the 64x48 frame"),
        (box(w=0), "greater than 0"),
    ],
)
def test_bad_labels_are_refused(
    client: LabelloopClient, job: dict[str, Any], frame_box: dict[str, Any], message: str
) -> None:
    with pytest.raises(LabelloopError, match=message):
        client.request(
            "PUT",
            f"/api/jobs/{job['id']}/annotations",
            json={"frames": [{"frame": job["frames"][0], "boxes": [frame_box]}]},
        )
    assert client.request("GET", f"/api/jobs/{job['id']}/annotations")["frames"] == []


def test_frame_outside_the_job_is_refused(client: LabelloopClient, job: dict[str, Any]) -> None:
    with pytest.raises(LabelloopError, match="not a frame of job"):
        put(client, job["id"], ["nope.jpg"])
    with pytest.raises(LabelloopError, match="404"):
        put(client, "no-such-job", job["frames"][:1])
