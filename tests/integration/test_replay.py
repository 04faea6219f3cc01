"""``labelloop replay`` on the real stack: the projections rebuilt from Kafka alone equal the
live ones, replaying twice changes nothing, and a replay sends no webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labelloop.audit import task_audit
from labelloop.client import LabelloopClient
from labelloop.composition import projections
from labelloop.db import get_engine
from tests.integration.harness import ApiServer, WebhookReceiver, make_frames, wait_until
from tests.integration.replay_check import assert_replay_matches, wait_quiet

pytestmark = pytest.mark.integration

JOB_CREATED = "io.labelloop.job.created.v1"
LABELS = "io.labelloop.labels.submitted.v1"


def test_replay_rebuilds_the_projections_and_sends_nothing(
    client: LabelloopClient,
    api: ApiServer,
    receiver: WebhookReceiver,
    new_database_url: Callable[[], str],
    tmp_path: Path,
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    subscription = client.request(
        "POST", "/api/webhooks", json={"url": receiver.url("/hook"), "events": [JOB_CREATED]}
    )
    frames = make_frames(tmp_path / "frames", 7, corrupt={6: "text"})
    created = client.create_task("replayed", ["box", "person"], frames, segment_size=3)
    task_id = created.task["id"]
    assert len(created.jobs) == 2
    assert wait_until(lambda: len(receiver.at("/hook")) >= 2, timeout_s=60)
    # still active when the replay runs: a replay that ran the services would deliver to it
    active = client.request(
        "POST",
        "/api/webhooks",
        json={"url": receiver.url("/live"), "events": [LABELS], "task_id": task_id},
    )
    first, second = created.jobs
    box = {"label": "box", "x": 8, "y": 8, "w": 20, "h": 20}
    for job, boxes in ((first, [box]), (second, []), (first, [box, {**box, "label": "person"}])):
        body = {"frames": [{"frame": name, "boxes": boxes} for name in job["frames"][:2]]}
        client.request("PUT", f"/api/jobs/{job['id']}/annotations", json=body)
    client.request("DELETE", f"/api/webhooks/{subscription['id']}")

    live_engine = get_engine(api.settings.database_url)
    wait_quiet(live_engine, [task_id])
    assert wait_until(lambda: len(receiver.at("/live")) >= 3, timeout_s=60)
    sent = len(receiver.received)
    try:
        live, replay_url = assert_replay_matches(
            api.settings.database_url,
            new_database_url,
            since,
            [task_id],
            [subscription["id"], active["id"]],
        )
        time.sleep(2)
        assert len(receiver.received) == sent, "a replay sent a webhook"
    finally:
        client.request("DELETE", f"/api/webhooks/{active['id']}")

    # the comparison saw what the test did, not empty tables
    assert {frame["status"] for frame in live["frames"]} == {"processed", "rejected"}
    assert len(live["jobs"]) == 2 and len(live["annotations"]) == 4
    [counter] = live["label_counters"]
    assert counter["labeled_frames"] == 4
    activity = {row["id"]: row["active"] for row in live["webhook_subscriptions"]}
    assert activity == {subscription["id"]: False, active["id"]: True}
    by_frame = {row["frame"]: row for row in live["annotations"]}
    assert len(by_frame[first["frames"][0]]["boxes"]) == 2, "the last submission wins"

    logged = json.dumps(live["event_log"], default=str)
    assert subscription["secret"] not in logged and active["secret"] not in logged

    # an auditor reads the replayed database like the live one
    audit = task_audit(get_engine(replay_url), task_id, projections())
    assert {a["frame"] for a in audit["annotations"]} == set(by_frame)
    assert audit["events"][0]["type"] == "io.labelloop.task.created.v1"
