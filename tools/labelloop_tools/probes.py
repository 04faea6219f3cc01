"""Round trips through the real stack, shared by the demo and the benchmarks."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from PIL import Image, ImageDraw

from labelloop.config import Settings
from labelloop.messaging.security import kafka_client_options
from labelloop.storage import ObjectStore
from schemas.s3 import S3EventNotification
from schemas.topics import Topic


async def storage_round_trips(
    settings: Settings, count: int, payload: bytes = b"labelloop probe"
) -> list[tuple[S3EventNotification, float]]:
    """Put ``count`` objects under a fresh ``tasks/`` prefix and wait for MinIO's record of each
    on ``storage.objects``; returns each parsed record with its put→consumed latency (s)."""
    store = ObjectStore.from_settings(settings)
    prefix = f"tasks/probe-{uuid.uuid4().hex[:8]}/data/"
    consumer = AIOKafkaConsumer(
        settings.topic(Topic.STORAGE_OBJECTS),
        **kafka_client_options(settings),
        group_id=None,
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    results: list[tuple[S3EventNotification, float]] = []
    try:
        await consumer.seek_to_end()
        for position in consumer.assignment():  # resolve "latest" now, before the puts
            await consumer.position(position)
        for index in range(count):
            key = f"{prefix}{index:05d}.bin"
            put_at = time.perf_counter()
            store.put_bytes(key, payload)
            while True:
                record = await consumer.getone()
                notification = S3EventNotification.model_validate_json(record.value)
                if notification.records[0].object_key == key:
                    results.append((notification, time.perf_counter() - put_at))
                    break
    finally:
        await consumer.stop()
    return results


def write_frames(folder: Path, count: int, size: tuple[int, int] = (96, 72)) -> list[Path]:
    """``count`` small distinct JPEG frames (a bright box on a dark background)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = Image.new("RGB", size, (index % 50, 20, 30))
        x = index * 7 % (size[0] - 24)
        ImageDraw.Draw(image).rectangle([x, 10, x + 20, 40], fill=(240, 140, 20))
        path = folder / f"frame_{index:05d}.jpg"
        image.save(path, "JPEG", quality=85)
        paths.append(path)
    return paths
