"""The object store (MinIO or any S3): the bucket, its event notifications, and object I/O."""

from __future__ import annotations

import asyncio
import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import aiohttp
from minio import Minio
from minio.credentials.credentials import Credentials
from minio.error import S3Error
from minio.helpers import DictType
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig
from minio.signer import sign_v4_s3
from minio.time import to_amz_date
from yarl import URL

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
    """A bucket on an S3 server, reached with the ``minio`` client; many small reads at once
    go through :meth:`fetch_bytes` (its :class:`AsyncObjectReader`) instead."""

    client: Minio
    bucket: str
    reader: AsyncObjectReader | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore:
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        reader = AsyncObjectReader(
            settings.s3_endpoint,
            Credentials(settings.s3_access_key, settings.s3_secret_key),
            region=settings.s3_region,
            secure=settings.s3_secure,
            connections=settings.ingest_fetch_concurrency,
        )
        return cls(client, settings.s3_bucket, reader)

    async def fetch_bytes(
        self, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        """:meth:`get_bytes` on the event loop, so many reads share one thread."""
        if self.reader is None:
            return await asyncio.to_thread(self.get_bytes, key, max_bytes=max_bytes, etag=etag)
        return await self.reader.get(self.bucket, key, max_bytes=max_bytes, etag=etag)

    async def aclose(self) -> None:
        """Close the reader's connections (the process is stopping)."""
        if self.reader is not None:
            await self.reader.close()

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

    def remove(self, key: str) -> None:
        """Delete the object (nothing happens when it is not there)."""
        self.client.remove_object(self.bucket, key)

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


UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_ERROR_CODE = re.compile(rb"<Code>([^<]+)</Code>")


@dataclass
class AsyncObjectReader:
    """GETs objects on the event loop with aiohttp, signed with the ``minio`` client's SigV4.

    The ``minio`` client is synchronous: a thread per read in flight, and its per-request
    Python cost (urllib3, signing) held ingest to a third of what the store serves. Measured on
    the stack's MinIO with 1 KB objects: 1,600 reads/s from one thread with 8 in flight,
    against 900/s from 8 threads with the ``minio`` client and 200/s with httpx's async client.
    """

    endpoint: str
    credentials: Credentials
    region: str
    secure: bool = False
    connections: int = 8
    """Requests in flight at once (more wait for a connection)."""
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.connections)
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
            self._loop = loop
        return self._session

    async def get(
        self, bucket: str, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        """The object's bytes, with :meth:`ObjectStore.get_bytes`'s limits and errors."""
        scheme = "https" if self.secure else "http"
        url = f"{scheme}://{self.endpoint}/{quote(bucket)}/{quote(key, safe='/~')}"
        date = datetime.now(UTC)
        headers: DictType = {
            "Host": self.endpoint,
            "x-amz-content-sha256": UNSIGNED_PAYLOAD,
            "x-amz-date": to_amz_date(date),
        }
        if etag:
            headers["If-Match"] = '"' + etag.strip('"') + '"'
        signed = sign_v4_s3(
            method="GET",
            url=urlsplit(url),
            region=self.region,
            headers=headers,
            credentials=self.credentials,
            content_sha256=UNSIGNED_PAYLOAD,
            date=date,
        )
        sent = {name: str(value) for name, value in signed.items()}
        async with self._client().get(URL(url, encoded=True), headers=sent) as response:
            if response.status == 412:
                raise ObjectChanged(f"{key} is no longer the version with ETag {etag}")
            if response.status != 200:
                found = _ERROR_CODE.search(await response.content.read(64 * 1024))
                code = found.group(1).decode() if found else f"HTTP {response.status}"
                raise ObjectReadError(f"GET {key}: {code}", code=code, status=response.status)
            if max_bytes is None:
                return await response.read()
            if response.content_length is not None and response.content_length > max_bytes:
                raise ObjectTooLarge(f"{key} is over the limit of {max_bytes:,} bytes")
            data = bytearray()
            async for chunk in response.content.iter_chunked(256 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise ObjectTooLarge(f"{key} is over the limit of {max_bytes:,} bytes")
            return bytes(data)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


class ObjectReadError(Exception):
    """The store refused a read: ``code`` is its S3 error code (``NoSuchKey``...)."""

    def __init__(self, message: str, *, code: str, status: int) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ObjectChanged(Exception):
    """The object was overwritten after the version asked for."""


class ObjectTooLarge(Exception):
    """The object holds more bytes than the reader allowed (it stopped reading there)."""
