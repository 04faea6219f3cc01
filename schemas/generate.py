"""Generates the committed contract documents: JSON Schemas, AsyncAPI, and the event table.

``labelloop schemas export`` writes them; ``tests/unit/test_schemas.py`` fails when the files
in ``schemas/generated/`` or ``docs/events.md`` no longer match the code.

The AsyncAPI document is built from the services themselves (the registry,
:mod:`labelloop.composition`): each one's real subscriber, declared by the same code as
``labelloop serve`` declares it (:meth:`EventSubscribers.document`, with the logical topic and
group names), and a publisher per topic for the event types it records (its ``produces``; the
outbox relay sends them). So every event type shows its producer and every consumer group that
receives it. ``docs/events.md`` says the same as a table, with what each handler does (its
docstring's first line) and the modules that build each event.

This is the one module of ``schemas/`` that reads the services: it documents them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas.events import EVENT_TYPES, EVENTS_BY_TOPIC
from schemas.s3 import S3EventNotification
from schemas.topics import Topic, topic_carrying

if TYPE_CHECKING:
    from labelloop.messaging.subscribers import Handler
    from labelloop.runtime import Service

GENERATED_DIR = Path(__file__).parent / "generated"
EVENTS_DOC = Path(__file__).parent.parent / "docs" / "events.md"
OBJECT_STORE = "object-store"
"""The producer of ``storage.objects``: MinIO or versitygw, outside labelloop."""

_TOPIC_DESCRIPTIONS = {
    Topic.STORAGE_OBJECTS: "S3 event records published by the object store for `tasks/`.",
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


def services() -> list[Service]:
    """Every service's app module, in the registry's order."""
    from labelloop.composition import SERVICES

    return [entry.load() for entry in SERVICES]


def service_broker() -> KafkaBroker:
    """A broker (never started) with every service's subscriber and a publisher per topic per
    producer: what the AsyncAPI document describes."""
    from labelloop.messaging.batches import union_of

    broker = KafkaBroker("localhost:9092", description="labelloop event backbone (key = task id)")
    broker.publisher(
        Topic.STORAGE_OBJECTS.value,
        title=f"{OBJECT_STORE}:{Topic.STORAGE_OBJECTS.value}",
        description=_TOPIC_DESCRIPTIONS[Topic.STORAGE_OBJECTS]
        + " Produced by the object store (MinIO's notify_kafka, or versitygw).",
        schema=S3EventNotification,
    )
    for service in services():
        service.subscribers.document(broker)
        name = service.IDENTITY.name
        for topic in Topic:
            produced = [cls for cls in service.subscribers.produces if topic_carrying(cls) is topic]
            if not produced:
                continue
            types = ", ".join(f"`{cls.event_type()}`" for cls in produced)
            broker.publisher(
                topic.value,
                title=f"{name}:{topic.value}",
                description=f"{_TOPIC_DESCRIPTIONS[topic]} Produced by {name}: {types}, through "
                "the outbox relay. Poison messages are copied untouched to `<topic>.dlq` with "
                "the error in headers.",
                schema=union_of(produced),
            )
    return broker


def asyncapi_document() -> dict[str, Any]:
    from labelloop import __version__

    spec = AsyncAPI(
        service_broker(),
        title="labelloop events",
        version=__version__,
        description="Every event is a CloudEvents 1.0 JSON document (structured mode). Each "
        "receive operation is a service's consumer group (channel `<group>:<topic>`), each "
        "send operation a producing service (channel `<service>:<topic>`).",
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


def consumers_of(message: type[Any], among: list[Service]) -> list[tuple[str, Handler[Any]]]:
    """Every handler a message of class ``message`` reaches, with its consumer group."""
    return [
        (service.IDENTITY.consumer_group, handler)
        for service in among
        for handler in service.subscribers.handlers_of(message)
    ]


def producers_of(event_type: type[Any], among: list[Service]) -> list[str]:
    """The services declaring that they produce ``event_type``."""
    return [s.IDENTITY.name for s in among if event_type in s.subscribers.produces]


def built_in() -> dict[str, dict[str, list[str]]]:
    """Where each event type is built in the code: service → event type → the modules calling
    ``<EventClass>.create(...)``, read from the source of each service's package (the api's:
    the core's, ``labelloop``)."""
    from labelloop.composition import SERVICES

    names = {cls.__name__: cls.event_type() for cls in EVENT_TYPES.values()}
    found: dict[str, dict[str, list[str]]] = {}
    for entry in SERVICES:
        package = entry.app.split(".")[0]
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations is not None
        root = Path(next(iter(spec.submodule_search_locations)))
        mine = found.setdefault(entry.name, {})
        for path in sorted(root.rglob("*.py")):
            module = ".".join((package, *path.relative_to(root).with_suffix("").parts))
            for node in ast.walk(ast.parse(path.read_text())):
                built = _created_class(node)
                if built in names and module not in mine.setdefault(names[built], []):
                    mine[names[built]].append(module)
    return found


def _created_class(node: ast.AST) -> str | None:
    """``X`` when ``node`` is a call ``X.create(...)``."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "create"
        and isinstance(node.func.value, ast.Name)
    ):
        return node.func.value.id
    return None


def events_table() -> str:
    """``docs/events.md``: per topic, each message type's schema, producer and consumers."""
    among = services()
    built = built_in()
    lines = [
        "# Events",
        "",
        "Generated by `labelloop schemas export` from the services' typed subscribers (the",
        "registry: `labelloop/composition.py`) and the contracts in `schemas/`;",
        "`tests/unit/test_schemas.py` fails when this file and the code differ. Do not edit it.",
        "",
        "Every event is a CloudEvents 1.0 JSON document keyed by task id. A consumer group gets",
        "each event of its topics; its handlers take the types below (the others it validates,",
        "then leaves). A *whole-batch* handler sees every event of its types in a batch before",
        "the other handlers run. The AsyncAPI document: `schemas/generated/asyncapi.json`.",
        "",
        "## Services",
        "",
        "| service | consumer group | consumes | produces |",
        "| --- | --- | --- | --- |",
    ]
    for service in among:
        subscribers = service.subscribers
        lines.append(
            f"| {service.IDENTITY.name} | `{service.IDENTITY.consumer_group}` | "
            + ", ".join(f"`{topic.value}`" for topic in subscribers.topics)
            + " | "
            + (", ".join(f"`{cls.event_type()}`" for cls in subscribers.produces) or "—")
            + " |"
        )
    for topic in Topic:
        lines += ["", f"## `{topic.value}`", "", _TOPIC_DESCRIPTIONS[topic], ""]
        lines += ["| event type | schema | producer | consumers (group: handler — what it does) |"]
        lines += ["| --- | --- | --- | --- |"]
        for message in _documented(topic):
            lines.append(_row(message, among, built))
    return "\n".join(lines)


def _documented(topic: Topic) -> tuple[type[Any], ...]:
    if topic is Topic.STORAGE_OBJECTS:
        return (S3EventNotification,)  # s3:TestEvent is validated, then left out by ingest
    return EVENTS_BY_TOPIC[topic]


def _row(message: type[Any], among: list[Service], built: dict[str, dict[str, list[str]]]) -> str:
    if message is S3EventNotification:
        kind, schema, producer = "s3:ObjectCreated:*", "s3-event-notification", OBJECT_STORE
    else:
        kind = schema = message.event_type()
        names = producers_of(message, among)
        producer = ", ".join(
            name + "".join(f" (`{module}`)" for module in built.get(name, {}).get(kind, []))
            for name in names
        )
    consumers = "<br>".join(
        f"`{group}`: `{handler.name}`{' (whole batch)' if handler.whole_batch else ''} — "
        f"{handler.summary}"
        for group, handler in consumers_of(message, among)
    )
    link = f"[`{message.__name__}`](../schemas/generated/jsonschema/{schema}.json)"
    return f"| `{kind}` | {link} | {producer} | {consumers or '—'} |"


def rendered() -> dict[Path, str]:
    """Every generated file and its exact text."""
    files = {
        GENERATED_DIR / "asyncapi.json": json.dumps(asyncapi_document(), indent=2, sort_keys=True),
        EVENTS_DOC: events_table(),
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
