"""versitygw: an S3 gateway maintained upstream, built by ``go install`` at a pinned version,
serving a plain directory (its posix backend) and publishing S3 event records to Kafka.

What differs from MinIO, and how labelloop copes (measured on v1.8.0):

* its event records carry object keys as stored, not URL-encoded, and no ``EventName``/``Key``
  envelope: ingest reads them with ``LABELLOOP_S3_EVENT_KEY_ENCODING=raw``, the default when
  ``LABELLOOP_STACK_S3=versitygw``;
* it sends every event of every bucket (no per-bucket configuration through the S3 API), so a
  filter file limits them to created and removed objects; ingest ignores other buckets;
* each record is sent fire-and-forget from a goroutine, dropped when Kafka is down: ingest's
  reconciler recovers those objects by listing, as it does for MinIO;
* it sends an ``s3:TestEvent`` when it starts, which ingest skips, and it exits at start when
  the broker is unreachable (the stack starts Kafka first);
* the topic must exist before it starts (the stack creates every topic with Kafka).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from labelloop.stack.base import ObjectStoreComponent, Progress, go_install
from labelloop.storage import ObjectStore
from schemas.topics import Topic

VERSITYGW_MODULE = "github.com/versity/versitygw"
HEALTH_PATH = "/labelloop-health"
EVENT_FILTER = {"s3:ObjectCreated:*": True, "s3:ObjectRemoved:*": True}


class VersitygwComponent(ObjectStoreComponent):
    """The S3 server when ``LABELLOOP_STACK_S3=versitygw``."""

    name = "versitygw"
    health_path = HEALTH_PATH
    notifications = True
    """Whether it publishes events to Kafka (tests switch this off to lose them all)."""

    @property
    def binary(self) -> Path:
        version = self.settings.versitygw_module_version
        return self.settings.cache_dir / "bin" / f"versitygw-{version}" / "versitygw"

    def install(self, progress: Progress) -> None:
        if self.binary.exists():
            return
        version = self.settings.versitygw_module_version
        progress(f"building versitygw {version} with go install (first time only, ~2 min)")
        go_install(f"{VERSITYGW_MODULE}/cmd/versitygw", version, self.binary, needs="1.25")

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        root = (self.data_dir / "root").resolve()
        root.mkdir(parents=True, exist_ok=True)
        event_filter = (self.data_dir / "event-filter.json").resolve()
        event_filter.write_text(json.dumps(EVENT_FILTER))
        env = {**os.environ, "ROOT_ACCESS_KEY": s.s3_access_key, "ROOT_SECRET_KEY": s.s3_secret_key}
        argv = [str(self.binary), "--port", f"{s.s3_host}:{s.s3_port}", "--health", HEALTH_PATH]
        if self.notifications:
            argv += [
                "--event-kafka-url",
                s.kafka_bootstrap_servers.split(",")[0],
                "--event-kafka-topic",
                s.topic(Topic.STORAGE_OBJECTS),
                "--event-filter",
                str(event_filter),
            ]
        return [*argv, "posix", str(root)], env

    def version(self) -> str | None:
        if not self.binary.exists():
            return None
        return f"{VERSITYGW_MODULE}@{self.settings.versitygw_module_version}"

    def after_start(self, progress: Progress) -> None:
        if ObjectStore.from_settings(self.settings).ensure_bucket():
            progress(f"created bucket {self.settings.s3_bucket}")

    def set_notifications(self, enabled: bool) -> None:
        """Restart with or without its Kafka events (there is no per-bucket switch)."""
        self.notifications = enabled
        self.daemon.stop()
        argv, env = self.command()
        self.daemon.start(argv, env=env)
        self.wait_healthy()
