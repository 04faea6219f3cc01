"""Typed subscribers: what a batch calls, in which order, and the real FastStream subscriber
(in memory: FastStream's test broker, the decoder and DLQ of labelloop's batch consumers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from labelloop.composition import SERVICES, load_service, service_names
from labelloop.config import Settings
from labelloop.identity import ServiceIdentity
from labelloop.messaging.broker import create_broker
from labelloop.messaging.subscribers import EventSubscribers
from schemas.envelope import CloudEvent
from schemas.events import (
    EVENT_TYPES,
    FrameProcessed,
    FrameProcessedData,
    JobCreated,
    JobCreatedData,
    TaskDataReady,
    TaskDataReadyData,
    TaskFramesListed,
    TaskFramesListedData,
)
from schemas.s3 import S3EventNotification
from schemas.topics import NoTopicCarries, Topic, topic_carrying

Calls = list[tuple[str, list[str]]]


def processed(task: str, name: str) -> FrameProcessed:
    return FrameProcessed.create(
        FrameProcessedData(
            task_id=task,
            frame=name,
            object_key=f"tasks/{task}/data/{name}",
            width=4,
            height=4,
            format="JPEG",
            size_bytes=10,
            sha256="0" * 64,
        ),
        source="/test",
        key=(task, name),
        taskid=task,
    )


def listed(task: str, part: int) -> TaskFramesListed:
    return TaskFramesListed.create(
        TaskFramesListedData(task_id=task, part=part, parts=1, frames=[f"f{part}.jpg"]),
        source="/test",
        key=(task, part),
        taskid=task,
    )


def ready(task: str) -> TaskDataReady:
    return TaskDataReady.create(
        TaskDataReadyData(task_id=task, frame_count=1, rejected_count=0, parts=1),
        source="/test",
        key=(task,),
        taskid=task,
    )


def job(task: str) -> JobCreated:
    return JobCreated.create(
        JobCreatedData(
            job_id=f"{task}-j0", task_id=task, start_frame=0, stop_frame=0, frames=["f0.jpg"]
        ),
        source="/test",
        key=(task,),
        taskid=task,
    )


def subscribers_recording() -> EventSubscribers[Calls]:
    """Handlers of each kind, each recording the ids it was called with."""
    subscribers: EventSubscribers[Calls] = EventSubscribers(ServiceIdentity("probe"))

    @subscribers.handler(FrameProcessed, JobCreated, whole_batch=True)
    async def on_views(events: Sequence[FrameProcessed | JobCreated], calls: Calls) -> None:
        """Views."""
        calls.append(("views", [event.id for event in events]))

    @subscribers.handler(JobCreated)
    async def on_job(events: Sequence[JobCreated], calls: Calls) -> None:
        """Jobs."""
        calls.append(("job", [event.id for event in events]))

    @subscribers.handler(TaskFramesListed, TaskDataReady)
    async def on_listing(events: Sequence[TaskFramesListed | TaskDataReady], calls: Calls) -> None:
        """Listings."""
        calls.append(("listing", [event.id for event in events]))

    return subscribers


def test_a_batch_calls_whole_batch_handlers_first_then_each_run_in_order() -> None:
    subscribers = subscribers_recording()
    f1, j1, p1, p2, r1, f2, j2 = (
        processed("t", "a"),
        job("t1"),
        listed("t", 0),
        listed("u", 0),
        ready("t"),
        processed("t", "b"),
        job("t2"),
    )
    plan = subscribers.plan([f1, j1, p1, p2, r1, f2, j2])
    assert [(handler.name, [m.id for m in run]) for handler, run in plan] == [
        ("on_views", [f1.id, j1.id, f2.id, j2.id]),  # every view of the batch, once, first
        ("on_job", [j1.id]),
        ("on_listing", [p1.id, p2.id, r1.id]),  # one handler for both types: one mixed run
        ("on_job", [j2.id]),  # a frame between is not this handler's: the run is not broken
    ]


async def test_the_dispatcher_passes_the_deps_and_leaves_out_types_nobody_takes() -> None:
    subscribers = subscribers_recording()
    calls: Calls = []
    r1 = ready("t")
    await subscribers.dispatcher(calls)([r1])
    assert calls == [("listing", [r1.id])]
    assert subscribers.plan([]) == []


def test_topics_and_types_follow_from_the_handlers() -> None:
    subscribers = subscribers_recording()
    assert subscribers.topics == (Topic.INGEST_EVENTS, Topic.JOBGEN_EVENTS)
    assert subscribers.takes == (FrameProcessed, JobCreated, TaskFramesListed, TaskDataReady)
    assert [h.name for h in subscribers.handlers_of(JobCreated)] == ["on_views", "on_job"]
    assert subscribers.handlers_of(TaskDataReady)[0].summary == "Listings."


def test_a_type_has_one_handler_of_each_kind_and_must_be_on_a_topic() -> None:
    subscribers = subscribers_recording()
    with pytest.raises(ValueError, match="two handlers"):

        @subscribers.handler(JobCreated)
        async def again(events: Sequence[JobCreated], calls: Calls) -> None: ...

    class Stray(CloudEvent[FrameProcessedData]):
        pass

    with pytest.raises(NoTopicCarries):
        subscribers.handler(Stray)
    assert topic_carrying(S3EventNotification) is Topic.STORAGE_OBJECTS


@dataclass
class Wiring:
    broker: KafkaBroker
    settings: Settings


async def test_the_real_subscriber_dispatches_and_dead_letters_a_bad_record_alone() -> None:
    """FastStream's in-memory broker runs the subscriber ``serve`` declares: decoded with the
    topic's whole union, validated again by FastStream against the handled types."""
    settings = Settings.model_construct()
    broker = create_broker(settings, client_id="test")
    subscribers = subscribers_recording()
    calls: Calls = []
    subscribers.subscribe(Wiring(broker, settings), calls)
    dead: list[Any] = []

    @broker.subscriber("ingest.events.dlq")
    async def dlq(body: Any) -> None:
        dead.append(body)

    p1, r1 = listed("t", 0), ready("t")
    frame = processed("t", "a")
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(
            p1.model_dump_json().encode(),
            b'{"type": "io.labelloop.unknown.v1"}',
            frame.model_dump_json().encode(),
            r1.model_dump_json().encode(),
            topic="ingest.events",
        )
    assert calls == [("views", [frame.id]), ("listing", [p1.id, r1.id])]
    assert dead == [{"type": "io.labelloop.unknown.v1"}], "the bad record alone, once"


def test_every_service_subscribes_as_it_did_before_typed_handlers() -> None:
    """The groups and topics Kafka knows each service by are unchanged (a changed group would
    read every topic from the start again)."""
    everything = tuple(topic for topic in Topic if topic is not Topic.STORAGE_OBJECTS)
    expected = {
        "api": ("labelloop-timeline", everything),
        "ingest": ("labelloop-ingest", (Topic.STORAGE_OBJECTS,)),
        "jobgen": ("labelloop-jobgen", (Topic.INGEST_EVENTS,)),
        "webhooks": ("labelloop-webhooks", everything),
        "labeler-assist": (
            "labelloop-labeler-assist",
            (Topic.INGEST_EVENTS, Topic.JOBGEN_EVENTS, Topic.LABELS_EVENTS, Topic.TRAINER_EVENTS),
        ),
        "trainer": ("labelloop-trainer", (Topic.INGEST_EVENTS, Topic.LABELS_EVENTS)),
    }
    found = {
        name: (service.IDENTITY.consumer_group, service.subscribers.topics)
        for name in service_names()
        for service in [load_service(name)]
    }
    assert found == expected
    for entry in SERVICES:
        assert load_service(entry.name).IDENTITY.name == entry.name


def test_every_event_type_has_exactly_one_producer_and_every_handled_type_a_topic() -> None:
    services = [load_service(name) for name in service_names()]
    producers: dict[type[Any], list[str]] = {}
    for service in services:
        for produced in service.subscribers.produces:
            producers.setdefault(produced, []).append(service.IDENTITY.name)
        for taken in service.subscribers.takes:
            topic_carrying(taken)  # raises for a type no topic carries
    assert {cls: len(names) for cls, names in producers.items()} == dict.fromkeys(
        EVENT_TYPES.values(), 1
    ), producers


def test_each_service_builds_exactly_the_events_it_declares() -> None:
    """``produces`` is checked against the code: the ``<Event>.create(...)`` calls in each
    service's package (the api's: the core's)."""
    from schemas.generate import built_in

    built = built_in()
    for name in service_names():
        declared = {cls.event_type() for cls in load_service(name).subscribers.produces}
        assert set(built[name]) == declared, name
