"""MinIO itself publishes its S3 event records to Kafka, and ``schemas`` parses them."""

from __future__ import annotations

import pytest

from labelloop.config import Settings
from labelloop.storage import ObjectStore
from schemas.s3 import S3EventNotification
from schemas.topics import Topic
from tests.integration.kafka_helpers import read_topic

pytestmark = pytest.mark.integration


async def test_put_object_reaches_kafka_as_s3_record(
    store: ObjectStore, settings: Settings, unique: str
) -> None:
    key = f"tasks/t{unique}/data/frame 001.png"  # a space: keys arrive URL-encoded
    store.put_bytes(key, b"\x89PNG not really", content_type="image/png")
    store.put_bytes(f"outside/{unique}.bin", b"not under tasks/: no event expected")

    records = await read_topic(
        settings.kafka_bootstrap_servers,
        settings.topic(Topic.STORAGE_OBJECTS),
        settle_s=0.5,
        expect=None,
        timeout_s=8,
    )
    mine = [
        S3EventNotification.model_validate_json(r.value)
        for r in records
        if unique.encode() in (r.key or b"")
    ]
    assert len(mine) == 1, f"expected one notification for {key}, got {len(mine)}"
    notification = mine[0]
    record = notification.records[0]
    assert notification.key == f"{settings.s3_bucket}/{key}"
    assert record.is_created and record.event_name == "s3:ObjectCreated:Put"
    assert record.bucket == settings.s3_bucket
    assert record.object_key == key
    assert record.s3.object.size == len(b"\x89PNG not really")
    assert record.s3.object.content_type == "image/png"
