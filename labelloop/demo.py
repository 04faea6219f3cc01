"""``make run``'s end-to-end job on the running local stack."""

from __future__ import annotations

import asyncio

from rich.console import Console
from rich.table import Table

from labelloop.config import Settings
from labelloop.probes import storage_round_trips


def run_demo(settings: Settings, console: Console) -> None:
    """Put an object into MinIO and show MinIO's own S3 record read back from Kafka."""
    console.rule("object store → Kafka")
    [(notification, latency)] = asyncio.run(storage_round_trips(settings, 1))
    record = notification.records[0]
    table = Table("field", "value", title=f"record on {settings.topic('storage.objects')}")
    table.add_row("event", record.event_name)
    table.add_row("bucket", record.bucket)
    table.add_row("key", record.object_key)
    table.add_row("size", str(record.s3.object.size))
    table.add_row("put → consumed", f"{latency * 1000:.1f} ms")
    console.print(table)
