"""kill -9 of each service in turn during a 200-frame task, on the real stack, twice.

Every service runs as its own process (a pod each), on topics and consumer groups of the test's
own, reading MinIO's real notifications. While the frames are being ingested, each service is
killed with SIGKILL and started again, one after the other. Afterwards no frame is lost, no job
is made twice, labeler-assist knows every frame and job, and the webhook receiver, deduplicating
on the delivery id, counts every subscribed event exactly once.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from ingest.models import Frame
from jobgen.models import Job
from labeler_assist.models import AssistFrame, AssistJob
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.messaging.outbox import OutboxMessage
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.manager import Stack
from schemas.topics import Topic
from tests.integration.harness import ServiceFleet, WebhookReceiver, make_frames, wait_until

pytestmark = pytest.mark.integration

FRAMES, SEGMENT = 200, 20
SERVICES = ["api", "ingest", "jobgen", "webhooks", "labeler-assist", "trainer"]
KILL_AT = {"ingest": 25, "jobgen": 50, "webhooks": 75, "labeler-assist": 100, "api": 125}
"""Processed frames at which each service is killed; the trainer goes last, at the end."""
UPLOAD_PAUSE_S = 0.02
SUBSCRIBED = [
    "io.labelloop.frame.processed.v1",
    "io.labelloop.job.created.v1",
    "io.labelloop.task.jobs-ready.v1",
]


def count(engine: Engine, model: type, *where: Any) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def announced(engine: Engine, task_id: str, event_types: list[str]) -> list[str]:
    with Session(engine) as session:
        return list(
            session.exec(
                select(OutboxMessage.event_id).where(
                    OutboxMessage.key == task_id, col(OutboxMessage.event_type).in_(event_types)
                )
            )
        )


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_service_killed_in_turn_during_a_200_frame_task(
    stack: Stack,
    settings: Settings,
    test_settings: Settings,
    database_url: str,
    receiver: WebhookReceiver,
    tmp_path: Path,
    round_: int,
) -> None:
    prefix = test_settings.kafka_topic_prefix
    await create_topics(test_settings, topic_names(test_settings))
    engine = get_engine(database_url)
    create_tables(engine)
    fleet = ServiceFleet(
        SERVICES,
        {
            "LABELLOOP_KAFKA_TOPIC_PREFIX": prefix,
            "LABELLOOP_KAFKA_GROUP_PREFIX": prefix,
            # MinIO publishes to the shared topic; this fleet's groups read all of it
            "LABELLOOP_KAFKA_STORAGE_TOPIC": settings.topic(Topic.STORAGE_OBJECTS),
            "LABELLOOP_DATABASE_URL": database_url,
            "LABELLOOP_VAR_DIR": str(tmp_path / "var"),
        },
        tmp_path,
    )
    try:
        fleet.start_all()
        api = httpx.Client(
            base_url=fleet.url("api"),
            headers={"Authorization": f"Bearer {settings.admin_token}"},
            timeout=30,
        )
        hook = api.post("/api/webhooks", json={"url": receiver.url("/k"), "events": SUBSCRIBED})
        assert hook.status_code == 201, hook.text
        task = api.post(
            "/api/tasks",
            json={"name": f"kills-{round_}", "labels": ["car"], "segment_size": SEGMENT},
        ).json()
        task_id = task["id"]
        files = make_frames(tmp_path / "frames", FRAMES)
        names = [path.name for path in files]
        urls = api.post(f"/api/tasks/{task_id}/uploads", json={"files": names}).json()

        def upload() -> None:
            # paced like a slow client: a batch consumer could otherwise take all 200 frames
            # before the first kill, and the kills would no longer fall mid-task
            with httpx.Client(timeout=60, trust_env=False) as store:
                for path in files:
                    put = store.put(urls["frames"][path.name], content=path.read_bytes())
                    put.raise_for_status()
                    time.sleep(UPLOAD_PAUSE_S)
                store.put(urls["manifest"], content=json.dumps({"files": names}).encode())

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()

        def processed() -> int:
            return count(engine, Frame, Frame.task_id == task_id)

        at_kill: dict[str, int] = {}
        for service, frames in KILL_AT.items():
            assert wait_until(
                lambda at=frames: processed() >= at,
                timeout_s=240,
                interval_s=0.05,
            ), f"{processed()} frames before killing {service}\n{fleet.log('ingest')}"
            at_kill[service] = processed()
            fleet.kill(service)
        at_kill["trainer"] = processed()
        fleet.kill("trainer")
        print(f"processed frames at each kill: {at_kill}")
        uploader.join(timeout=120)
        assert at_kill["ingest"] < FRAMES, "ingest died mid-task"

        def jobs_announced() -> bool:
            ready = announced(engine, task_id, ["io.labelloop.task.jobs-ready.v1"])
            return bool(ready) and count(engine, AssistJob, AssistJob.task_id == task_id) > 0

        assert wait_until(jobs_announced, timeout_s=240, interval_s=0.5), fleet.log("jobgen")
        assert all(codes == [-signal.SIGKILL] for codes in fleet.kills.values()), fleet.kills

        # no frame lost, none twice
        assert processed() == FRAMES
        assert count(engine, Frame, Frame.task_id == task_id, Frame.status == "processed") == FRAMES
        # each job once, announced once
        with Session(engine) as session:
            jobs = session.exec(select(Job).where(Job.task_id == task_id)).all()
        assert sorted((j.start_frame, j.stop_frame) for j in jobs) == [
            (start, start + SEGMENT - 1) for start in range(0, FRAMES, SEGMENT)
        ]
        created = announced(engine, task_id, ["io.labelloop.job.created.v1"])
        assert len(created) == len(set(created)) == FRAMES // SEGMENT
        ready = announced(engine, task_id, ["io.labelloop.task.data-ready.v1"])
        assert len(ready) == 1
        # labeler-assist, killed too, has caught up on every frame and job
        assert wait_until(
            lambda: (
                count(engine, AssistFrame, AssistFrame.task_id == task_id) == FRAMES
                and count(engine, AssistJob, AssistJob.task_id == task_id) == FRAMES // SEGMENT
            ),
            timeout_s=120,
            interval_s=0.5,
        ), fleet.log("labeler-assist")
        # every subscribed event delivered; deduplicated by delivery id, each counted once
        expected = set(announced(engine, task_id, SUBSCRIBED))
        assert len(expected) == FRAMES + FRAMES // SEGMENT + 1

        def delivered() -> set[str]:
            return {json.loads(r.body)["id"] for r in receiver.at("/k")}

        assert wait_until(lambda: delivered() >= expected, timeout_s=180, interval_s=0.5), (
            f"{len(delivered() & expected)} of {len(expected)} delivered\n{fleet.log('webhooks')}"
        )
        time.sleep(1)
        by_delivery: dict[str, set[str]] = {}
        for request in receiver.at("/k"):
            by_delivery.setdefault(request.headers["webhook-id"], set()).add(
                json.loads(request.body)["id"]
            )
        ours = {d: ids for d, ids in by_delivery.items() if ids & expected}
        assert all(len(ids) == 1 for ids in ours.values()), "one event per delivery id"
        assert len(ours) == len(expected), "each event exactly once after deduplication"
    finally:
        fleet.stop_all()
