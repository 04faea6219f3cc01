"""Read your own pushes: whatever an event has told a client of is usable at once.

labeler-assist's consumer is held back (its process is not running) while jobgen announces a
task's jobs. The client, told by ``task.jobs-ready``, then reads and labels the job right away:
the annotation and pre-annotation routes answer, the labels are taken and counted toward the
threshold exactly once, and when labeler-assist's consumer starts and catches up nothing is
counted again. A job nobody announced still gets 404 at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, func, select

from labeler_assist.models import AssistFrame, AssistJob, LabelCounter
from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.messaging.outbox import OutboxMessage
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.manager import Stack
from schemas.topics import Topic
from tests.integration.harness import ApiServer, make_frames, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.object_store]

WITHOUT_LABELER_ASSIST = ["api", "ingest", "jobgen", "webhooks"]
"""Every route is served (the api answers all of them), but labeler-assist consumes nothing."""
THRESHOLD = "io.labelloop.labels.threshold-reached.v1"
SUBMITTED = "io.labelloop.labels.submitted.v1"


@pytest.fixture
async def own_settings(
    stack: Stack, settings: Settings, test_settings: Settings, database_url: str, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Topics, consumer groups and a database of this test's own; MinIO's shared topic."""
    await create_topics(test_settings, topic_names(test_settings))
    yield test_settings.model_copy(
        update={
            "kafka_group_prefix": test_settings.kafka_topic_prefix,
            "kafka_storage_topic": settings.topic(Topic.STORAGE_OBJECTS),
            "database_url": database_url,
            "var_dir": tmp_path / "var",
        }
    )


def outbox_count(settings: Settings, task_id: str, event_type: str) -> int:
    with Session(get_engine(settings.database_url)) as session:
        return session.exec(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.key == task_id, OutboxMessage.event_type == event_type)
        ).one()


def labels(frames: list[str]) -> dict[str, object]:
    box = {"label": "car", "x": 8, "y": 8, "w": 22, "h": 22}
    return {"frames": [{"frame": name, "boxes": [box]} for name in frames]}


def test_a_just_announced_job_is_usable_before_labeler_assist_has_read_it(
    own_settings: Settings, tmp_path: Path
) -> None:
    held_back = ApiServer(own_settings, WITHOUT_LABELER_ASSIST)
    held_back.start()
    engine = get_engine(own_settings.database_url)
    try:
        with LabelloopClient(held_back.url, own_settings.admin_token) as client:
            created = client.create_task(
                "read-your-pushes",
                ["car"],
                make_frames(tmp_path / "frames", 12),
                label_threshold=5,
                timeout_s=120,
            )
            [job] = created.jobs
            task_id, job_id = created.task["id"], job["id"]
            with Session(engine) as session:
                assert session.get(AssistJob, job_id) is None, "labeler-assist is held back"

            # told of the job by task.jobs-ready: every route the client calls next answers
            path = f"/api/jobs/{job_id}"
            assert client.request("GET", f"{path}/annotations") == {"frames": []}
            assert client.request("GET", f"{path}/preannotations") == {"frames": []}
            assert client.request("GET", path)["frames"] == job["frames"]
            frames = client.request("GET", f"/api/tasks/{task_id}/frames")
            assert frames["processed"] == 12
            saved = client.request("PUT", f"{path}/annotations", json=labels(job["frames"]))
            assert [f["frame"] for f in saved["frames"]] == job["frames"]
            got = client.request("GET", f"{path}/annotations")
            assert [f["frame"] for f in got["frames"]] == job["frames"]
            assert outbox_count(own_settings, task_id, THRESHOLD) == 2, "12 frames, every 5"

            # a frame outside the job is still refused, with its reason
            outside = client.http.put(f"{path}/annotations", json=labels(["frame_999.jpg"])).json()
            assert "is not a frame of job" in outside["detail"]

            # a job nobody announced: 404, never a retry
            missing = client.http.put(f"/api/jobs/{task_id}-j9999/annotations", json=labels([]))
            assert missing.status_code == 404 and "retry-after" not in missing.headers
            assert client.http.get(f"/api/jobs/{task_id}-j9999/preannotations").status_code == 404

            # a token scoped to another task cannot tell the announced job exists
            other = client.request("POST", "/api/tasks", json={"name": "o", "labels": ["car"]})
            scoped = client.request(
                "POST",
                "/api/tokens",
                json={"name": "elsewhere", "role": "annotator", "task_ids": [other["id"]]},
            )
            for method in ("GET", "PUT"):
                response = httpx.request(
                    method,
                    f"{held_back.url}{path}/annotations",
                    headers={"Authorization": f"Bearer {scoped['token']}"},
                    json=labels(job["frames"][:1]),
                    timeout=30,
                )
                assert response.status_code == 404, response.text

            # labeler-assist's consumer starts and catches up on the frames and the job
            catching_up = ApiServer(own_settings, ["labeler-assist"])
            catching_up.start()
            try:

                def caught_up() -> bool:
                    with Session(engine) as session:
                        known = session.exec(
                            select(func.count())
                            .select_from(AssistFrame)
                            .where(AssistFrame.task_id == task_id)
                        ).one()
                        return known == 12 and session.get(AssistJob, job_id) is not None

                assert wait_until(caught_up, timeout_s=60), "labeler-assist did not catch up"
                again = client.request("PUT", f"{path}/annotations", json=labels(job["frames"]))
                assert len(again["frames"]) == 12
            finally:
                catching_up.stop()
        with Session(engine) as session:
            counter = session.get(LabelCounter, task_id)
            assert counter is not None
            assert (counter.labeled_frames, counter.crossings) == (12, 2), "counted once"
        assert outbox_count(own_settings, task_id, THRESHOLD) == 2
        assert outbox_count(own_settings, task_id, SUBMITTED) == 2
    finally:
        held_back.stop()
