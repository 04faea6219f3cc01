"""Contracts: the envelope, event ids, S3 record parsing, and the committed generated files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from schemas.envelope import event_id
from schemas.events import (
    EVENT_TYPES,
    EVENTS_BY_TOPIC,
    FrameProcessed,
    FrameRejected,
    FrameRejectedData,
    TaskDataReady,
    TaskDataReadyData,
    event_union,
)
from schemas.generate import rendered
from schemas.s3 import S3EventNotification
from schemas.topics import Topic, dlq_topic

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_event_ids_are_stable_per_cause_and_distinct_across_causes() -> None:
    assert event_id("t.v1", "task", "a.jpg") == event_id("t.v1", "task", "a.jpg")
    assert event_id("t.v1", "task", "a.jpg") != event_id("t.v1", "task", "b.jpg")
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert event_id("t.v1", "ab", "c") != event_id("t.v1", "a", "bc")


def test_created_event_links_to_its_cause() -> None:
    ready = TaskDataReady.create(
        TaskDataReadyData(task_id="t1", frame_count=1, rejected_count=1, parts=1),
        source="/labelloop/ingest",
        key=("t1",),
        taskid="t1",
    )
    rejected = FrameRejected.create(
        FrameRejectedData(
            task_id="t1",
            frame="b.jpg",
            object_key="tasks/t1/data/b.jpg",
            code="empty",
            reason="the file is empty (0 bytes)",
        ),
        source="/labelloop/ingest",
        key=("t1", "b.jpg"),
        cause=ready,
    )
    assert rejected.type == "io.labelloop.frame.rejected.v1"
    assert rejected.causationid == ready.id
    assert rejected.correlationid == ready.id
    assert rejected.taskid == "t1" and rejected.subject == "t1"
    document = json.loads(rejected.model_dump_json())
    assert document["specversion"] == "1.0" and document["datacontenttype"] == "application/json"


def test_events_are_frozen_and_strict() -> None:
    ready = TaskDataReady.create(
        TaskDataReadyData(task_id="t1", frame_count=0, rejected_count=0, parts=0),
        source="/s",
        key=("t1",),
        taskid="t1",
    )
    with pytest.raises(ValidationError):
        ready.id = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TaskDataReadyData(task_id="../etc", frame_count=0, rejected_count=0, parts=0)
    with pytest.raises(ValidationError):
        TaskDataReadyData.model_validate(
            {"task_id": "t1", "frame_count": 0, "rejected_count": 0, "parts": 0, "surprise": 1}
        )


def test_topic_union_refuses_unknown_types_and_versions() -> None:
    adapter: TypeAdapter[object] = TypeAdapter(event_union(Topic.INGEST_EVENTS))
    processed = {
        "id": "1",
        "source": "/labelloop/ingest",
        "type": "io.labelloop.frame.processed.v1",
        "data": {
            "task_id": "t1",
            "frame": "a.png",
            "object_key": "tasks/t1/data/a.png",
            "sha256": "a" * 64,
            "width": 2,
            "height": 2,
            "size_bytes": 10,
            "format": "PNG",
        },
    }
    assert isinstance(adapter.validate_python(processed), FrameProcessed)
    with pytest.raises(ValidationError):
        adapter.validate_python({**processed, "type": "io.labelloop.frame.processed.v2"})


def test_every_event_type_is_registered_once() -> None:
    all_classes = [cls for classes in EVENTS_BY_TOPIC.values() for cls in classes]
    assert len(EVENT_TYPES) == len(all_classes) == 20
    assert all(name.startswith("io.labelloop.") and name.endswith(".v1") for name in EVENT_TYPES)


def test_minio_record_parses_with_decoded_key() -> None:
    raw = (FIXTURES / "minio-put-record.json").read_text()
    notification = S3EventNotification.model_validate_json(raw)
    record = notification.records[0]
    assert record.is_created and not record.is_removed
    assert record.bucket == "labelloop"
    assert record.object_key == "tasks/t-probe/data/hello.txt"
    assert record.s3.object.size == 2
    assert notification.key == "labelloop/tasks/t-probe/data/hello.txt"


def test_dlq_topic_name() -> None:
    assert dlq_topic("ingest.events") == "ingest.events.dlq"


def test_committed_generated_files_match_the_code() -> None:
    stale = [
        str(path)
        for path, text in rendered().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `labelloop schemas export` and commit: {stale}"


def test_asyncapi_documents_every_topic_and_event() -> None:
    document = json.loads(
        (Path(__file__).parents[2] / "schemas/generated/asyncapi.json").read_text()
    )
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {topic.value for topic in Topic}
    schema_names = set(document["components"]["schemas"])
    assert {cls.__name__ for classes in EVENTS_BY_TOPIC.values() for cls in classes} <= schema_names


def _schemas_reached(document: dict[str, Any], node: Any) -> set[str]:
    """The component schemas ``node`` refers to, transitively."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref", "")
            if ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in found:
                    found.add(name)
                    stack.append(document["components"]["schemas"][name])
            stack.extend(value for key, value in item.items() if key != "$ref")
        elif isinstance(item, list):
            stack.extend(item)
    return found


def test_asyncapi_names_each_event_types_producer_and_every_group_receiving_it() -> None:
    """From the committed document alone: who sends each event type (one service) and which
    consumer groups receive it (channels ``<service>:<topic>`` and ``<group>:<topic>``)."""
    from labelloop.composition import load_service, service_names

    document = json.loads(
        (Path(__file__).parents[2] / "schemas/generated/asyncapi.json").read_text()
    )
    senders: dict[str, set[str]] = {}
    receivers: dict[str, set[str]] = {}
    for operation in document["operations"].values():
        channel_name = operation["channel"]["$ref"].rsplit("/", 1)[1]
        channel = document["channels"][channel_name]
        messages = [
            document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
            for ref in channel["messages"].values()
        ]
        reached = set().union(*(_schemas_reached(document, m["payload"]) for m in messages))
        owner = channel_name.split(":")[0]
        found = senders if operation["action"] == "send" else receivers
        for name in reached:
            found.setdefault(name, set()).add(owner)
    services = [load_service(name) for name in service_names()]
    for cls in EVENT_TYPES.values():
        name = cls.__name__
        (producer,) = senders[name]
        assert producer in {s.IDENTITY.name for s in services if cls in s.subscribers.produces}
        groups = {s.IDENTITY.consumer_group for s in services if cls in s.subscribers.takes}
        assert receivers.get(name, set()) == groups, name
    assert receivers["S3EventNotification"] == {"labelloop-ingest"}
    assert senders["S3EventNotification"] == {"object-store"}


def test_the_event_table_answers_who_consumes_an_event_in_one_row() -> None:
    table = (Path(__file__).parents[2] / "docs/events.md").read_text()
    (row,) = [line for line in table.splitlines() if line.startswith("| `io.labelloop.job.created")]
    assert "jobgen" in row.split("|")[3], "its producer"
    for group in ("labelloop-labeler-assist", "labelloop-webhooks", "labelloop-timeline"):
        assert f"`{group}`" in row.split("|")[4], group


def test_versitygw_records_parse_with_their_raw_keys() -> None:
    from schemas.s3 import S3TestEvent

    raw = {
        "Records": [
            {
                "eventVersion": "2.2",
                "eventSource": "aws:s3",
                "eventTime": "2026-12-01T10:25:54Z",
                "eventName": "s3:ObjectCreated:Put",
                "userIdentity": {"PrincipalId": "vgwadmin"},
                "s3": {
                    "bucket": {"name": "labelloop", "arn": "arn:aws:s3:::/labelloop/x"},
                    "object": {
                        "key": "tasks/t1/data/my frame+1%.jpg",
                        "size": 15,
                        "eTag": '"78420a1a7a7ff05ba0bfad6afb807f77"',
                        "versionId": None,
                        "sequencer": "1",
                    },
                },
            }
        ]
    }
    notification = S3EventNotification.model_validate(raw)
    assert notification.event_name is None and notification.key is None
    record = notification.records[0].with_raw_key()
    assert record.object_key == "tasks/t1/data/my frame+1%.jpg"
    assert record.is_created and record.s3.object.size == 15
    started = S3TestEvent.model_validate(
        {"Bucket": "Test-Bucket", "Event": "s3:TestEvent", "Service": "S3", "Time": "x"}
    )
    assert started.event == "s3:TestEvent"
