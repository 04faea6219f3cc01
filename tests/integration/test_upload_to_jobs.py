"""Upload → processed frames → jobs → signed webhooks, on the real stack, with no polling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from labelloop.client import LabelloopClient, LabelloopError
from tests.integration.harness import WebhookReceiver, make_frames, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.object_store]

JOB_CREATED = "io.labelloop.job.created.v1"
JOBS_READY = "io.labelloop.task.jobs-ready.v1"


def subscribe(
    client: LabelloopClient,
    receiver: WebhookReceiver,
    path: str,
    events: list[str],
    **extra: object,
) -> dict[str, Any]:
    return client.request(
        "POST",
        "/api/webhooks",
        json={
            "url": receiver.url(path),
            "events": events,
            **extra,
        },
    )


@pytest.mark.parametrize(
    ("overlap", "ranges"),
    [(0, [(0, 9), (10, 19), (20, 22)]), (2, [(0, 9), (8, 17), (16, 22)])],
)
def test_task_jobs_arrive_pushed_and_signed(
    client: LabelloopClient,
    receiver: WebhookReceiver,
    tmp_path: Path,
    overlap: int,
    ranges: list[tuple[int, int]],
) -> None:
    files = make_frames(tmp_path / "frames", 25, corrupt={4: "truncated", 17: "text"})
    subscription = subscribe(client, receiver, "/hooks", [JOB_CREATED, JOBS_READY])
    assert subscription["secret"].startswith("whsec_")

    created = client.create_task(
        "cars", ["car"], files, segment_size=10, overlap=overlap, timeout_s=90
    )
    task_id = created.task["id"]

    frames = client.request("GET", f"/api/tasks/{task_id}/frames")
    assert (frames["processed"], frames["rejected"]) == (23, 2)
    rejected = {f["name"]: f for f in frames["frames"] if f["status"] == "rejected"}
    assert rejected["frame_004.jpg"]["code"] == "truncated"
    assert rejected["frame_017.jpg"]["code"] == "not_an_image"
    assert all(f["reason"] for f in rejected.values())

    jobs = created.jobs
    assert [(job["start_frame"], job["stop_frame"]) for job in jobs] == ranges
    good = sorted(p.name for i, p in enumerate(files) if i not in {4, 17})
    covered = [frame for job in jobs for frame in job["frames"]]
    if overlap == 0:
        assert covered == good, "every processed frame in exactly one job, in order"
    else:
        assert sorted(set(covered)) == good

    # the pushes: 3 job.created + 1 jobs-ready, for this task, each signed
    verifier = Webhook(subscription["secret"])
    assert wait_until(
        lambda: len([r for r in receiver.at("/hooks") if r.event["taskid"] == task_id]) >= 4,
        timeout_s=30,
    )
    mine = [r for r in receiver.at("/hooks") if r.event["taskid"] == task_id]
    for request in mine:
        verified = verifier.verify(request.body, request.headers)
        assert verified["id"] == request.event["id"]
    types = [r.event["type"] for r in mine]
    assert types.count(JOB_CREATED) == 3 and types.count(JOBS_READY) == 1
    assert {r.event["data"]["job_id"] for r in mine if r.event["type"] == JOB_CREATED} == {
        job["id"] for job in jobs
    }
    ready = next(r.event for r in mine if r.event["type"] == JOBS_READY)
    assert ready["data"]["job_count"] == len(jobs) == 3


def test_failing_receiver_is_retried_with_the_same_delivery_id(
    client: LabelloopClient, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.scripts["/flaky"] = [500, 500]  # then 200
    subscription = subscribe(client, receiver, "/flaky", [JOBS_READY])
    created = client.create_task("flaky", ["car"], make_frames(tmp_path, 3), timeout_s=60)
    task_id = created.task["id"]

    assert wait_until(lambda: len(receiver.at("/flaky")) >= 3, timeout_s=30)
    attempts = receiver.at("/flaky")
    assert len({r.headers["webhook-id"] for r in attempts}) == 1
    assert all(r.event["taskid"] == task_id for r in attempts)
    verifier = Webhook(subscription["secret"])
    for request in attempts:
        verifier.verify(request.body, request.headers)

    def delivered() -> list[dict[str, Any]]:
        return [
            d
            for d in client.request("GET", f"/api/webhooks/{subscription['id']}/deliveries")
            if d["status"] == "delivered"
        ]

    assert wait_until(lambda: len(delivered()) == 1)
    [delivery] = delivered()
    assert delivery["id"] == attempts[0].headers["webhook-id"]
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert all(a["latency_ms"] >= 0 for a in delivery["attempt_log"])


def test_client_errors_are_not_retried_and_can_be_redelivered(
    client: LabelloopClient, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    receiver.scripts["/gone"] = [410]
    subscription = subscribe(client, receiver, "/gone", [JOBS_READY])
    client.create_task("gone", ["car"], make_frames(tmp_path, 2), timeout_s=60)
    deliveries_path = f"/api/webhooks/{subscription['id']}/deliveries"
    assert wait_until(
        lambda: [d["status"] for d in client.request("GET", deliveries_path)] == ["failed"],
        timeout_s=30,
    )
    [failed] = client.request("GET", deliveries_path)
    assert failed["attempts"] == 1 and failed["last_status_code"] == 410

    client.request("POST", f"{deliveries_path}/{failed['id']}/redeliver")
    assert wait_until(lambda: client.request("GET", deliveries_path)[0]["status"] == "delivered")
    assert [r.headers["webhook-id"] for r in receiver.at("/gone")] == [failed["id"]] * 2


def test_ping_and_task_filter(
    client: LabelloopClient, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    other = client.create_task("other", ["car"], make_frames(tmp_path / "o", 2), timeout_s=60)
    subscription = subscribe(client, receiver, "/only", [JOBS_READY], task_id="not-this-one")
    client.request("POST", f"/api/webhooks/{subscription['id']}/ping")
    assert wait_until(lambda: len(receiver.at("/only")) == 1)
    ping = receiver.at("/only")[0]
    assert ping.event["type"] == "io.labelloop.webhook.ping.v1"
    Webhook(subscription["secret"]).verify(ping.body, ping.headers)
    assert other.task["id"] != "not-this-one"
    assert all(r.event["type"] != JOBS_READY for r in receiver.at("/only"))


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:9/x",
        "ftp://example.com/x",
        "http://user:pw@127.0.0.1/x",
    ],
)
def test_unsafe_targets_are_refused(client: LabelloopClient, url: str) -> None:
    with pytest.raises(LabelloopError, match="422"):
        client.request("POST", "/api/webhooks", json={"url": url, "events": [JOBS_READY]})


def test_secrets_are_shown_once(client: LabelloopClient, receiver: WebhookReceiver) -> None:
    secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # 24 bytes, base64
    created = subscribe(client, receiver, "/s", [JOBS_READY], secret=secret)
    assert created["secret"] == secret
    listed = client.request("GET", "/api/webhooks")
    assert all("secret" not in item for item in listed)
    with pytest.raises(LabelloopError, match="422"):
        subscribe(client, receiver, "/s", [JOBS_READY], secret="whsec_c2hvcnQ=")
