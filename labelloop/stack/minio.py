"""MinIO, built by ``go install`` at a pinned pseudo-version, publishing bucket events to Kafka."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from labelloop.stack.base import Component, Progress, StackError, require_tool
from labelloop.storage import ObjectStore
from schemas.topics import Topic

MINIO_MODULE = "github.com/minio/minio"
KAFKA_TARGET = "PRIMARY"
"""Name of MinIO's notify_kafka target: its ARN is ``arn:minio:sqs::PRIMARY:kafka``."""


class MinioComponent(Component):
    """The S3 server. Notifications for ``tasks/`` go straight from MinIO to ``storage.objects``,
    through a queue dir so events made while Kafka is down are sent once it is back."""

    name = "minio"

    @property
    def address(self) -> str:
        return self.settings.s3_endpoint

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
        go = require_tool(
            "go", "Install Go 1.24 or newer (https://go.dev/doc/install) to build MinIO."
        )
        version = self.settings.minio_module_version
        progress(f"building MinIO {version} with go install (first time only, ~5 min on 2 cores)")
        self.binary.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [go, "install", f"{MINIO_MODULE}@{version}"],
            env={**os.environ, "GOBIN": str(self.binary.parent), "CGO_ENABLED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0 or not self.binary.exists():
            raise StackError(
                f"go install {MINIO_MODULE}@{version} failed:\n{result.stderr[-3000:]}"
            )

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        data = (self.data_dir / "data").resolve()
        queue = (self.data_dir / "events-queue").resolve()
        data.mkdir(parents=True, exist_ok=True)
        queue.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "MINIO_ROOT_USER": s.s3_access_key,
            "MINIO_ROOT_PASSWORD": s.s3_secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            f"MINIO_NOTIFY_KAFKA_ENABLE_{KAFKA_TARGET}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{KAFKA_TARGET}": s.kafka_bootstrap_servers,
            f"MINIO_NOTIFY_KAFKA_TOPIC_{KAFKA_TARGET}": s.topic(Topic.STORAGE_OBJECTS),
            f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{KAFKA_TARGET}": str(queue),
            f"MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_{KAFKA_TARGET}": "100000",
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

    def healthy(self) -> bool:
        try:
            url = f"http://{self.settings.s3_endpoint}/minio/health/ready"
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

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
        store.ensure_notifications(f"arn:minio:sqs::{KAFKA_TARGET}:kafka", prefix="tasks/")
