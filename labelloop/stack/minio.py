"""MinIO, built by ``go install`` at a pinned pseudo-version, publishing bucket events to Kafka."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from labelloop.stack.base import ObjectStoreComponent, Progress, go_install
from labelloop.storage import ObjectStore
from schemas.topics import Topic

MINIO_MODULE = "github.com/minio/minio"
KAFKA_TARGET = "PRIMARY"
"""Name of MinIO's notify_kafka target: its ARN is ``arn:minio:sqs::PRIMARY:kafka``."""


class MinioComponent(ObjectStoreComponent):
    """The S3 server. Notifications for ``tasks/`` go straight from MinIO to ``storage.objects``
    as each object is created. There is deliberately no queue dir: with one, MinIO writes every
    event to disk and forwards the store on a fixed 3 s tick, seconds on every task. Without it
    an event MinIO cannot send (Kafka down) is dropped, and ingest's reconciler recovers the
    object by listing (``services/ingest/ingest/reconciler.py``)."""

    name = "minio"
    health_path = "/minio/health/ready"

    @property
    def binary(self) -> Path:
        return (
            self.settings.cache_dir
            / "bin"
            / f"minio-{self.settings.minio_module_version}"
            / "minio"
        )

    def install(self, progress: Progress) -> None:
        if self.binary.exists():
            return
        version = self.settings.minio_module_version
        progress(f"building MinIO {version} with go install (first time only, ~5 min on 2 cores)")
        go_install(MINIO_MODULE, version, self.binary, needs="1.24")

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        data = (self.data_dir / "data").resolve()
        data.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": s.s3_access_key,
            "MINIO_ROOT_PASSWORD": s.s3_secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            f"MINIO_NOTIFY_KAFKA_ENABLE_{KAFKA_TARGET}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{KAFKA_TARGET}": s.kafka_bootstrap_servers,
            f"MINIO_NOTIFY_KAFKA_TOPIC_{KAFKA_TARGET}": s.topic(Topic.STORAGE_OBJECTS),
        }
        argv = [
            str(self.binary),
            "server",
            str(data),
            "--address",
            f"{s.s3_host}:{s.s3_port}",
            "--console-address",
            f"{s.s3_host}:{s.s3_console_port}",
            "--quiet",
        ]
        return argv, env

    def version(self) -> str | None:
        if not self.binary.exists():
            return None
        result = subprocess.run(
            [str(self.binary), "--version"], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            return None
        # `go install` builds report DEVELOPMENT.GOGET; the pinned module version says more.
        return f"{MINIO_MODULE}@{self.settings.minio_module_version}"

    def after_start(self, progress: Progress) -> None:
        store = ObjectStore.from_settings(self.settings)
        if store.ensure_bucket():
            progress(f"created bucket {self.settings.s3_bucket}")
        self.set_notifications(True)

    def set_notifications(self, enabled: bool) -> None:
        """The bucket's notification configuration, set through the S3 API itself."""
        store = ObjectStore.from_settings(self.settings)
        if enabled:
            store.ensure_notifications(f"arn:minio:sqs::{KAFKA_TARGET}:kafka", prefix="tasks/")
        else:
            store.client.delete_bucket_notification(store.bucket)
