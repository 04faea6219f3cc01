"""Training runs without the rest of the loop, for the trainer's tests and benchmarks: a task whose
labeled frames are in the store and in the trainer's tables, and its threshold crossing, either
enqueued as the trainer's consumer would or sent through Kafka."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labelloop.config import Settings
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.security import kafka_client_options
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from labelloop_tools.synthetic import synthetic_frame
from schemas.events import LabelsThresholdReached, LabelsThresholdReachedData
from schemas.topics import Topic
from trainer.handlers import enqueue
from trainer.models import TrainingFrame, TrainingLabel, TrainingRequest
from trainer.projections import PROJECTION

FRAMES = 16


def seed_training_task(
    engine: Engine, store: ObjectStore, task_id: str, priority: int, frames: int = FRAMES
) -> None:
    """A task whose frames are in the store, validated and labeled in the trainer's copy."""
    with Session(engine) as session:
        session.add(
            Task(id=task_id, name=task_id, labels=["box"], priority=priority, created_by="test")
        )
        for seed in range(frames):
            image, boxes = synthetic_frame(seed)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            name = f"f{seed:03d}.jpg"
            key = f"tasks/{task_id}/data/{name}"
            store.put_bytes(key, buffer.getvalue())
            digest = hashlib.sha256(buffer.getvalue()).hexdigest()
            session.add(
                TrainingFrame(
                    task_id=task_id,
                    frame=name,
                    object_key=key,
                    sha256=digest,
                    width=image.width,
                    height=image.height,
                )
            )
            session.add(
                TrainingLabel(task_id=task_id, frame=name, boxes=[b.api_shape() for b in boxes])
            )
        session.commit()


def threshold_event(task_id: str, priority: int) -> LabelsThresholdReached:
    """The task's first threshold crossing."""
    return LabelsThresholdReached.create(
        LabelsThresholdReachedData(
            task_id=task_id, labeled_frames=FRAMES, crossing=1, priority=priority
        ),
        source="/tests",
        key=(task_id, 1),
        taskid=task_id,
    )


def queue_run(engine: Engine, task_id: str, priority: int, waited_s: float = 0) -> None:
    """The task's threshold crossing enqueued as the trainer's consumer does, ``waited_s`` ago."""
    enqueue(threshold_event(task_id, priority), Transactions(engine, projection=PROJECTION))
    if waited_s:
        with Session(engine) as session:
            [row] = session.exec(select(TrainingRequest).where(TrainingRequest.task_id == task_id))
            row.enqueued_at = datetime.now(UTC) - timedelta(seconds=waited_s)
            session.add(row)
            session.commit()


async def send_threshold(settings: Settings, task_id: str, priority: int) -> None:
    """The task's threshold crossing, sent to ``labels.events`` as labeler-assist sends it."""
    producer = AIOKafkaProducer(**kafka_client_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(Topic.LABELS_EVENTS),
            threshold_event(task_id, priority).model_dump_json().encode(),
            key=task_id.encode(),
        )
    finally:
        await producer.stop()
