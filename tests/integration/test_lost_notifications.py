"""Immediate notifications lose events; reconciliation loses nothing (real stack, each twice).

The object store sends each ObjectCreated record at once, with no store-and-forward: while
Kafka is down those records are dropped (MinIO without a queue dir), and with notifications
switched off none are sent at all. ingest's reconciler lists the incomplete task and feeds
what it finds through the same path, so every frame is processed once, every job made once,
every subscribed event delivered once, and the timeline says which frames came by listing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from labelloop.client import LabelloopClient
from labelloop.stack.manager import Stack
from tests.integration.harness import WebhookReceiver, make_frames, wait_until
from tests.integration.test_faults import FRAMES, SEGMENT, assert_task_complete, stopped

pytestmark = [pytest.mark.integration, pytest.mark.object_store]

RECOVERED = "io.labelloop.task.objects-recovered.v1"
SUBSCRIBED = [
    "io.labelloop.frame.processed.v1",
    "io.labelloop.job.created.v1",
    "io.labelloop.task.jobs-ready.v1",
]


@contextmanager
def notifications_off(stack: Stack) -> Iterator[None]:
    """The object store sends no notification at all until the block ends."""
    stack.s3.set_notifications(False)
    try:
        yield
    finally:
        stack.s3.set_notifications(True)


def new_task(client: LabelloopClient, receiver: WebhookReceiver, name: str) -> str:
    task = client.request(
        "POST", "/api/tasks", json={"name": name, "labels": ["car"], "segment_size": SEGMENT}
    )
    client.request(
        "POST",
        "/api/webhooks",
        json={"url": receiver.url(f"/{task['id']}"), "events": SUBSCRIBED, "task_id": task["id"]},
    )
    return str(task["id"])


def recovered_keys(client: LabelloopClient, task_id: str) -> set[str]:
    events = client.request("GET", f"/api/tasks/{task_id}/events")
    return {key for e in events if e["type"] == RECOVERED for key in e["data"]["object_keys"]}


def assert_each_event_delivered_once(receiver: WebhookReceiver, task_id: str) -> None:
    expected = FRAMES + FRAMES // SEGMENT + 1  # frame.processed, job.created, jobs-ready

    def by_delivery() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for request in receiver.at(f"/{task_id}"):
            found.setdefault(request.headers["webhook-id"], set()).add(request.event["id"])
        return found

    assert wait_until(lambda: len(by_delivery()) >= expected, timeout_s=60), len(by_delivery())
    deliveries = by_delivery()
    assert len(deliveries) == expected
    assert all(len(ids) == 1 for ids in deliveries.values())
    assert len({next(iter(ids)) for ids in deliveries.values()}) == expected


def kafka_down(stack: Stack) -> AbstractContextManager[None]:
    """Kafka stopped while the block runs and 10 s after: the store drops what it sends."""
    return stopped(stack, "kafka", seconds=10)


@pytest.mark.parametrize("round_", [1, 2])
@pytest.mark.parametrize(
    ("fault", "all_lost"), [(kafka_down, False), (notifications_off, True)], ids=["kafka", "off"]
)
def test_frames_whose_notifications_were_lost_are_ingested_once(
    stack: Stack,
    client: LabelloopClient,
    receiver: WebhookReceiver,
    tmp_path: Path,
    fault: Callable[[Stack], AbstractContextManager[None]],
    all_lost: bool,
    round_: int,
) -> None:
    task_id = new_task(client, receiver, f"lost-{fault.__name__}-{round_}")
    with fault(stack):
        client.upload(task_id, make_frames(tmp_path, FRAMES))
    assert_task_complete(client, task_id)
    assert_each_event_delivered_once(receiver, task_id)
    recovered = recovered_keys(client, task_id)
    assert recovered, "the lost frames came by reconciliation"
    if all_lost:  # nothing was notified: every frame and the manifest came by listing
        names = [f"tasks/{task_id}/data/frame_{index:03d}.jpg" for index in range(FRAMES)]
        assert recovered == {*names, f"tasks/{task_id}/manifest.json"}
