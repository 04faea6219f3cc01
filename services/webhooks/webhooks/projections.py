"""webhooks' projection: the subscriptions, from their created and deleted events.

Signing secrets are never in an event (the topics are kept forever), so a replayed
subscription has an empty secret: a replayed database is for audit, not for sending.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from labelloop.projections import Projection, task_rows
from schemas.events import WebhookSubscriptionCreated, WebhookSubscriptionDeleted
from webhooks.models import Attempt, AttemptPublic, Delivery, DeliveryPublic, Subscription

REPLAYED_SECRET = ""
"""The secret of a subscription rebuilt from events: none (see the module docstring)."""


def apply_subscription_created(
    session: Session, event: WebhookSubscriptionCreated, *, secret: str = REPLAYED_SECRET
) -> Subscription:
    data = event.data
    subscription = session.get(Subscription, data.subscription_id)
    if subscription is None:
        subscription = Subscription(
            id=data.subscription_id,
            url=data.url,
            events=list(data.events),
            task_id=data.task_id,
            secret=secret,
            created_by=data.created_by,
            created_at=event.time,
        )
        session.add(subscription)
    return subscription


def apply_subscription_deleted(session: Session, event: WebhookSubscriptionDeleted) -> None:
    subscription = session.get(Subscription, event.data.subscription_id)
    if subscription is not None:
        subscription.active = False
        session.add(subscription)


def delivery_public(session: Session, delivery: Delivery) -> DeliveryPublic:
    """A delivery as its subscriber and an auditor see it, with its attempts in order."""
    attempts = session.exec(
        select(Attempt).where(Attempt.delivery_id == delivery.id).order_by(col(Attempt.attempt))
    )
    public = DeliveryPublic.model_validate(delivery, from_attributes=True)
    public.attempt_log = [AttemptPublic.model_validate(a, from_attributes=True) for a in attempts]
    return public


def audit(session: Session, task_id: str) -> dict[str, list[Any]]:
    """Every webhook delivery of the task's events, with its attempts."""
    deliveries = task_rows(session, Delivery, task_id, col(Delivery.created_at))
    return {
        "webhook_deliveries": [
            delivery_public(session, delivery).model_dump(mode="json") for delivery in deliveries
        ]
    }


PROJECTION = Projection(
    tables=("webhook_subscriptions",),
    appliers={
        WebhookSubscriptionCreated: apply_subscription_created,
        WebhookSubscriptionDeleted: apply_subscription_deleted,
    },
    audit=audit,
    unreplayed={"webhook_subscriptions": ("secret",)},  # never leaves the live database
)
