"""webhooks' tables: subscriptions, deliveries (one per subscription and event) and attempts."""

from __future__ import annotations

from datetime import datetime

from pydantic import field_validator
from sqlalchemy import JSON, Column, LargeBinary
from sqlmodel import Field, SQLModel

from schemas.envelope import utcnow
from schemas.events import EVENT_TYPES, TaskId
from webhooks.domain import secret_key


class SubscriptionBase(SQLModel):
    url: str = Field(max_length=2048, description="Where events are POSTed (http or https).")
    events: list[str] = Field(
        sa_column=Column(JSON, nullable=False), description="Event types to receive."
    )
    task_id: str | None = Field(
        default=None, max_length=64, description="Only this task's events; all tasks if null."
    )


class SubscriptionCreate(SubscriptionBase):
    events: list[str] = Field(min_length=1, max_length=100)
    task_id: TaskId | None = Field(default=None, description="Only this task's events.")
    secret: str | None = Field(
        default=None,
        description="Your own `whsec_` + base64 secret (≥ 24 bytes); generated if absent.",
    )

    @field_validator("events")
    @classmethod
    def _known_types(cls, events: list[str]) -> list[str]:
        unknown = sorted(set(events) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types: {', '.join(unknown)}")
        return sorted(set(events))

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, secret: str | None) -> str | None:
        if secret is not None:
            secret_key(secret)
        return secret


class Subscription(SubscriptionBase, table=True):
    __tablename__ = "webhook_subscriptions"

    id: str = Field(primary_key=True, max_length=64)
    secret: str = Field(max_length=256)
    created_by: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow)
    active: bool = True


class SubscriptionPublic(SubscriptionBase):
    """A subscription as listed: never with its secret."""

    id: str
    created_by: str
    created_at: datetime


class SubscriptionCreated(SubscriptionPublic):
    """The reply to a creation: the only time the secret is shown."""

    secret: str


class DeliveryBase(SQLModel):
    id: str = Field(primary_key=True, max_length=64, description="The `webhook-id` header.")
    subscription_id: str = Field(index=True, max_length=64)
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=128)
    task_id: str | None = Field(default=None, max_length=64)
    status: str = Field(default="pending", max_length=16, index=True)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    delivered_at: datetime | None = None


class Delivery(DeliveryBase, table=True):
    __tablename__ = "webhook_deliveries"

    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    allowed_attempts: int = Field(description="Grows by the maximum on each redelivery.")
    lease_until: datetime | None = Field(
        default=None, description="A dispatcher owns the delivery until then (several pods)."
    )


class Attempt(SQLModel, table=True):
    __tablename__ = "webhook_attempts"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(index=True, max_length=64)
    attempt: int
    at: datetime = Field(default_factory=utcnow)
    status_code: int | None = None
    latency_ms: float
    error: str | None = Field(default=None, max_length=1000)


class AttemptPublic(SQLModel):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryPublic(DeliveryBase):
    attempt_log: list[AttemptPublic] = []
