"""Generates the committed contract documents from the models: JSON Schemas and AsyncAPI.

``labelloop schemas export`` writes them; ``tests/unit/test_schemas.py`` fails when the files
in ``schemas/generated/`` no longer match the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas.events import EVENTS_BY_TOPIC, event_union
from schemas.s3 import S3EventNotification
from schemas.topics import Topic

GENERATED_DIR = Path(__file__).parent / "generated"

_TOPIC_DESCRIPTIONS = {
    Topic.STORAGE_OBJECTS: "S3 event records published by MinIO (notify_kafka) for `tasks/`.",
    Topic.TASKS_EVENTS: "Task lifecycle, produced by the API.",
    Topic.INGEST_EVENTS: (
        "Frames processed or rejected by ingest; once per task, the `task.frames-listed` parts "
        "and then `task.data-ready`."
    ),
    Topic.JOBGEN_EVENTS: "Annotation jobs cut from a task, then `task.jobs-ready`.",
    Topic.LABELS_EVENTS: "Human labels, label-threshold crossings and pre-annotations.",
    Topic.TRAINER_EVENTS: "Training runs and the model versions they publish or reject.",
    Topic.WEBHOOKS_EVENTS: "Webhook subscriptions created and deleted, produced by the API.",
}


def contract_broker() -> KafkaBroker:
    """A broker that declares every channel and its messages, for documentation only."""
    broker = KafkaBroker("localhost:9092", description="labelloop event backbone (key = task id)")
    broker.publisher(
        Topic.STORAGE_OBJECTS.value,
        title=f"{Topic.STORAGE_OBJECTS.value}:Publish",
        description=_TOPIC_DESCRIPTIONS[Topic.STORAGE_OBJECTS],
        schema=S3EventNotification,
    )
    for topic in EVENTS_BY_TOPIC:
        broker.publisher(
            topic.value,
            title=f"{topic.value}:Publish",
            description=_TOPIC_DESCRIPTIONS[topic]
            + " Poison messages are copied untouched to `<topic>.dlq` with the error in headers.",
            schema=event_union(topic),
        )
    return broker


def asyncapi_document() -> dict[str, Any]:
    from labelloop import __version__

    spec = AsyncAPI(
        contract_broker(),
        title="labelloop events",
        version=__version__,
        description="Every event is a CloudEvents 1.0 JSON document (structured mode).",
        schema_version="3.0.0",
    )
    document: dict[str, Any] = json.loads(spec.to_specification().to_json())
    return document


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema per event type (file name = the CloudEvents type) and for S3 records."""
    schemas: dict[str, dict[str, Any]] = {
        "s3-event-notification": S3EventNotification.model_json_schema(by_alias=True)
    }
    for classes in EVENTS_BY_TOPIC.values():
        for cls in classes:
            schemas[cls.event_type()] = cls.model_json_schema()
    return schemas


def rendered() -> dict[Path, str]:
    """Every generated file and its exact text."""
    files = {
        GENERATED_DIR / "asyncapi.json": json.dumps(asyncapi_document(), indent=2, sort_keys=True),
    }
    for name, schema in json_schemas().items():
        files[GENERATED_DIR / "jsonschema" / f"{name}.json"] = json.dumps(
            schema, indent=2, sort_keys=True
        )
    return {path: text + "\n" for path, text in files.items()}


def write_generated() -> list[Path]:
    written = []
    for path, text in rendered().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written
