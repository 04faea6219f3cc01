"""``make run``'s main job, ``python -m labelloop_tools demo``, both parts, against the test stack.

The README's first command must never break unnoticed: the demo runs here as the process
``make run`` starts, against every service on the real stack, and what it reports is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ApiServer

pytestmark = [pytest.mark.integration, pytest.mark.training]

SAMPLE_FRAMES, CORRUPT, SEGMENT = 25, 2, 10
LABELED, UNLABELED = 40, 12


def test_the_demo_runs_both_parts_and_checks_what_it_shows(api: ApiServer, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "LABELLOOP_API_PORT": str(api.settings.api_port),
        "LABELLOOP_VAR_DIR": str(tmp_path / "var"),
        "COLUMNS": "200",
    }
    done = subprocess.run(
        [sys.executable, "-m", "labelloop_tools", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "demo passed" in done.stdout

    summary = json.loads((tmp_path / "var" / "demo" / "summary.json").read_text())
    assert summary["problems"] == []
    jobs = summary["jobs"]
    assert jobs["files"] == SAMPLE_FRAMES
    assert jobs["processed"] == SAMPLE_FRAMES - CORRUPT
    assert len(jobs["rejected"]) == CORRUPT and all(jobs["rejected"].values())
    assert len(jobs["jobs"]) == -(-(SAMPLE_FRAMES - CORRUPT) // SEGMENT)
    delivered = [d["type"] for d in jobs["deliveries"]]
    assert sorted(set(delivered)) == [
        "io.labelloop.job.created.v1",
        "io.labelloop.task.jobs-ready.v1",
    ]
    assert delivered.count("io.labelloop.job.created.v1") == len(jobs["jobs"])
    assert all(d["verified"] for d in jobs["deliveries"])
    for rejected in jobs["rejected"]:
        assert rejected in done.stdout, "refused frames are shown with their reasons"

    loop = summary["model_loop"]
    assert loop["ending"]["type"] == "io.labelloop.model.published.v1"
    version = loop["ending"]["data"]["version"]
    assert f"model v{version} published" in done.stdout
    assert loop["unlabeled"] == UNLABELED and loop["preannotated"] == UNLABELED
    assert (tmp_path / "var" / "demo" / "preannotated.png").stat().st_size > 0
