"""A typed parser for the S3 event records an object store publishes to ``storage.objects``.

MinIO sends one JSON document per object change: ``{"EventName", "Key", "Records": [...]}``
where ``Key`` is ``<bucket>/<object key>`` and each record follows the AWS S3 event format
(object keys URL-encoded). versitygw sends ``{"Records": [...]}`` alone, with keys as stored
(not encoded: :meth:`S3EventRecord.with_raw_key`), and an :class:`S3TestEvent` at start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from urllib.parse import quote_plus, unquote_plus

from pydantic import BaseModel, ConfigDict, Field


class _S3Model(BaseModel):
    # MinIO adds fields over time; unknown ones are kept out of the way, not refused.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class S3Bucket(_S3Model):
    name: str
    arn: str | None = None


class S3Object(_S3Model):
    key: str = Field(description="URL-encoded object key, as S3 sends it.")
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    content_type: str | None = Field(default=None, alias="contentType")
    sequencer: str | None = None
    user_metadata: dict[str, str] = Field(default_factory=dict, alias="userMetadata")


class S3Entity(_S3Model):
    bucket: S3Bucket
    object: S3Object


class S3UserIdentity(_S3Model):
    principal_id: str | None = Field(default=None, alias="principalId")


class S3EventRecord(_S3Model):
    event_version: str | None = Field(default=None, alias="eventVersion")
    event_source: str | None = Field(default=None, alias="eventSource")
    event_time: datetime = Field(alias="eventTime")
    event_name: str = Field(alias="eventName", description="e.g. s3:ObjectCreated:Put")
    user_identity: S3UserIdentity | None = Field(default=None, alias="userIdentity")
    s3: S3Entity

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def object_key(self) -> str:
        """The decoded object key (``tasks/<id>/data/000.jpg``)."""
        return unquote_plus(self.s3.object.key)

    def with_raw_key(self) -> S3EventRecord:
        """This record from a server that sends keys unencoded, as one that encodes them."""
        encoded = quote_plus(self.s3.object.key, safe="/")
        entity = self.s3.model_copy(
            update={"object": self.s3.object.model_copy(update={"key": encoded})}
        )
        return self.model_copy(update={"s3": entity})

    @property
    def is_created(self) -> bool:
        return self.event_name.startswith("s3:ObjectCreated:")

    @property
    def is_removed(self) -> bool:
        return self.event_name.startswith("s3:ObjectRemoved:")


class S3EventNotification(_S3Model):
    """One notification as the object store publishes it to Kafka (MinIO, versitygw)."""

    event_name: str | None = Field(default=None, alias="EventName", description="MinIO only.")
    key: str | None = Field(
        default=None, alias="Key", description="`<bucket>/<object key>`, not URL-encoded (MinIO)."
    )
    records: list[S3EventRecord] = Field(alias="Records", min_length=1)


class S3TestEvent(_S3Model):
    """What versitygw sends once when it starts (no object changed): skipped."""

    event: Literal["s3:TestEvent"] = Field(alias="Event")
