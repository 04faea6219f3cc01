"""The CloudEvents 1.0 envelope (structured JSON mode) every labelloop event travels in.

We use our own frozen Pydantic model instead of the ``cloudevents`` SDK: the SDK's event is an
untyped mapping, while a generic model types ``data`` per event type, so FastStream validates
each message against the right schema, the JSON Schema and AsyncAPI documents come out of the
same class, and a consumer gets attribute access instead of dict lookups. The wire format is the
same: any CloudEvents SDK reads these documents.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

DataT = TypeVar("DataT", bound=BaseModel)

_EVENT_ID_NAMESPACE = uuid.UUID("5f0c7a3e-1d2b-4c7e-9a55-6c1ab0e7d2f1")


def event_id(event_type: str, *natural_key: object) -> str:
    """A deterministic event id: the same cause always yields the same id.

    Ids derived from natural keys (task id, frame name, version...) stay stable across retries
    and redeliveries, so every consumer can deduplicate on ``id`` alone.
    """
    name = "\x1f".join([event_type, *(str(part) for part in natural_key)])
    return str(uuid.uuid5(_EVENT_ID_NAMESPACE, name))


def utcnow() -> datetime:
    return datetime.now(UTC)


class CloudEvent(BaseModel, Generic[DataT]):
    """A CloudEvents 1.0 document with labelloop's extensions (taskid, correlation, causation)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, description="Unique and stable across retries.")
    source: str = Field(
        min_length=1, description="The producing service, e.g. `/labelloop/ingest`."
    )
    type: str
    time: datetime = Field(default_factory=utcnow)
    subject: str | None = Field(default=None, description="The task or job id the event is about.")
    datacontenttype: Literal["application/json"] = "application/json"
    taskid: str | None = Field(
        default=None, description="Extension: the task this event belongs to."
    )
    correlationid: str | None = Field(
        default=None,
        description="Extension: id shared by every event of one flow (e.g. the upload).",
    )
    causationid: str | None = Field(
        default=None, description="Extension: id of the event that caused this one."
    )
    data: DataT

    @classmethod
    def event_type(cls) -> str:
        """The fixed ``type`` of this event model."""
        event_type = cls.model_fields["type"].default
        if not isinstance(event_type, str):
            raise TypeError(f"{cls.__name__} has no fixed event type")
        return event_type

    @classmethod
    def id_for(cls, *key: object) -> str:
        """The id :meth:`create` gives this event type for ``key``: lets a reader find the one
        event that announced a thing (a job by its id) without scanning."""
        return event_id(cls.event_type(), *key)

    @classmethod
    def create(
        cls,
        data: DataT,
        *,
        source: str,
        key: tuple[object, ...],
        subject: str | None = None,
        taskid: str | None = None,
        cause: CloudEvent[Any] | None = None,
        **extra: Any,
    ) -> Self:
        """Build an event whose id derives from ``key``, linked to the event that caused it."""
        correlation = (cause.correlationid or cause.id) if cause is not None else None
        if taskid is None and cause is not None:
            taskid = cause.taskid
        return cls(
            id=cls.id_for(*key),
            source=source,
            type=cls.event_type(),
            subject=subject if subject is not None else taskid,
            taskid=taskid,
            correlationid=extra.pop("correlationid", correlation),
            causationid=cause.id if cause is not None else extra.pop("causationid", None),
            data=data,
            **extra,
        )
