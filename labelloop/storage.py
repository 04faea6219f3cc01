"""The object store (MinIO or any S3): the bucket, its event notifications, and object I/O."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from minio import Minio
from minio.error import S3Error
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig

from labelloop.config import Settings

NOTIFIED_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]


@dataclass(frozen=True)
class ListedObject:
    """One object as a listing shows it."""

    key: str
    size: int
    etag: str
    last_modified: datetime


@dataclass
class ObjectStore:
    """A bucket on an S3 server, reached with the ``minio`` client."""

    client: Minio
    bucket: str

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
        )
        return cls(client, settings.s3_bucket)

    def ensure_bucket(self) -> bool:
        """Create the bucket if missing; True when it was created."""
        if self.client.bucket_exists(self.bucket):
            return False
        self.client.make_bucket(self.bucket)
        return True

    def ensure_notifications(self, queue_arn: str, *, prefix: str) -> None:
        """Send create/remove events for keys under ``prefix`` to the queue target ``queue_arn``."""
        config = NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    NOTIFIED_EVENTS,
                    config_id="labelloop-tasks",
                    prefix_filter_rule=PrefixFilterRule(prefix),
                    queue=queue_arn,
                ),
            ]
        )
        self.client.set_bucket_notification(self.bucket, config)

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        self.client.put_object(
            self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
        )

    def list_objects(self, prefix: str) -> list[ListedObject]:
        """Every object under ``prefix`` (recursively), as ListObjectsV2 pages them."""
        return [
            ListedObject(item.object_name, item.size or 0, item.etag or "", item.last_modified)
            for item in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if item.object_name is not None and not item.is_dir and item.last_modified is not None
        ]

    def get_bytes(
        self, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        """The object's bytes: at most ``max_bytes`` (:class:`ObjectTooLarge` past them, read no
        further), and only the version whose ETag is ``etag`` (:class:`ObjectChanged` when it
        was overwritten since), so what is checked is what was announced."""
        headers: dict[str, str | list[str] | tuple[str]] | None = (
            {"If-Match": '"' + etag.strip('"') + '"'} if etag else None
        )
        try:
            response = self.client.get_object(self.bucket, key, request_headers=headers)
        except S3Error as error:
            if error.code == "PreconditionFailed":
                raise ObjectChanged(f"{key} is no longer the version with ETag {etag}") from error
            raise
        try:
            if max_bytes is None:
                return response.read()
            data = response.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ObjectTooLarge(f"{key} is over the limit of {max_bytes:,} bytes")
            return data
        finally:
            response.close()
            response.release_conn()


class ObjectChanged(Exception):
    """The object was overwritten after the version asked for."""


class ObjectTooLarge(Exception):
    """The object holds more bytes than the reader allowed (it stopped reading there)."""
