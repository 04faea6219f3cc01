"""jobgen killed mid-task (like kill -9) and restarted: no duplicate job, no missing job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from sqlmodel import Session, select

from ingest.manifest import data_ready_events
from jobgen.models import Job
from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.faults import CRASH_EXIT_STATUS
from labelloop.messaging.outbox import OutboxMessage
from labelloop.messaging.topics import create_topics, topic_names
from labelloop.stack.base import free_port
from labelloop.stack.manager import Stack
from labelloop.tasks import Task
from schemas.topics import Topic
from tests.integration.harness import service_process, wait_http_ready
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("crash_at", ["jobgen.before-commit", "jobgen.after-commit"])
async def test_jobgen_killed_mid_task_makes_each_job_once(
    stack: Stack,
    test_settings: Settings,
    tmp_path: Path,
    unique: str,
    crash_at: str,
    database_url: str,
) -> None:
    engine = get_engine(database_url)
    create_tables(engine)
    task_id = f"crash{unique}"
    with Session(engine) as session:
        session.add(
            Task(
                id=task_id,
                name="crash",
                labels=["car"],
                segment_size=10,
                overlap=0,
                created_by="test",
            )
        )
        session.commit()
    await create_topics(test_settings, topic_names(test_settings))
    frames = [f"f{i}.jpg" for i in range(25)]
    producer = AIOKafkaProducer(bootstrap_servers=test_settings.kafka_bootstrap_servers)
    await producer.start()
    for event in data_ready_events(task_id, frames, rejected=0):
        await producer.send_and_wait(
            test_settings.topic(Topic.INGEST_EVENTS),
            event.model_dump_json().encode(),
            key=task_id.encode(),
        )
    await producer.stop()

    env = {
        "LABELLOOP_KAFKA_TOPIC_PREFIX": test_settings.kafka_topic_prefix,
        "LABELLOOP_DATABASE_URL": database_url,
        "LABELLOOP_API_PORT": str(free_port()),
        "LABELLOOP_FAULT_CRASH_AT": crash_at,
        "LABELLOOP_FAULT_MARKER": str(tmp_path / "crashed"),
    }
    log = tmp_path / "jobgen.log"
    with service_process(["jobgen"], env, log) as first:
        assert first.wait(timeout=90) == CRASH_EXIT_STATUS, log.read_text()[-3000:]
    with Session(engine) as session:
        jobs_after_crash = session.exec(select(Job)).all()
        unpublished = session.exec(select(OutboxMessage)).all()
    if crash_at.endswith("before-commit"):
        assert jobs_after_crash == [] and unpublished == [], "a crash before commit leaves nothing"
    else:
        assert len(jobs_after_crash) == 3 and all(m.published_at is None for m in unpublished)

    port = free_port()
    with service_process(["jobgen"], {**env, "LABELLOOP_API_PORT": str(port)}, log) as second:
        assert wait_http_ready(f"http://127.0.0.1:{port}/healthz")
        records = await read_topic(
            test_settings.kafka_bootstrap_servers,
            test_settings.topic(Topic.JOBGEN_EVENTS),
            expect=4,
            timeout_s=60,
            settle_s=2,
        )
        assert second.poll() is None

    documents = [json.loads(record.value) for record in records]
    created = [d for d in documents if d["type"] == "io.labelloop.job.created.v1"]
    assert len(created) == 3 and len({d["id"] for d in created}) == 3
    assert [(d["data"]["start_frame"], d["data"]["stop_frame"]) for d in created] == [
        (0, 9),
        (10, 19),
        (20, 24),
    ]
    assert [d["type"] for d in documents].count("io.labelloop.task.jobs-ready.v1") == 1
    with Session(engine) as session:
        assert sorted(job.id for job in session.exec(select(Job))) == [
            f"{task_id}-j000{i}" for i in range(3)
        ]
