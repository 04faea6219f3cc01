"""Events on ``webhooks.events``: webhook subscriptions created and deleted, produced by the API."""

from __future__ import annotations

from typing import Literal

from schemas.envelope import CloudEvent
from schemas.events.base import EventData, TaskId


class WebhookSubscriptionCreatedData(EventData):
    subscription_id: str
    url: str
    events: list[str]
    task_id: TaskId | None = None
    created_by: str


class WebhookSubscriptionDeletedData(EventData):
    subscription_id: str
    deleted_by: str


class WebhookSubscriptionCreated(CloudEvent[WebhookSubscriptionCreatedData]):
    """A URL was subscribed to event types. Its signing secret is never in an event."""

    type: Literal["io.labelloop.webhook.subscription-created.v1"] = (
        "io.labelloop.webhook.subscription-created.v1"
    )


class WebhookSubscriptionDeleted(CloudEvent[WebhookSubscriptionDeletedData]):
    """A subscription was stopped; its delivery log is kept."""

    type: Literal["io.labelloop.webhook.subscription-deleted.v1"] = (
        "io.labelloop.webhook.subscription-deleted.v1"
    )
