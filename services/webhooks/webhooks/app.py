"""webhooks as a deployable unit: the fan-out subscriber, the dispatcher, the subscription API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from sqlmodel import Session, select

from labelloop.api.deps import PrincipalDep, RuntimeDep, SessionDep, require_admin
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from schemas.envelope import CloudEvent, utcnow
from schemas.events import (
    EVENT_TYPES,
    WebhookSubscriptionCreated,
    WebhookSubscriptionCreatedData,
    WebhookSubscriptionDeleted,
    WebhookSubscriptionDeletedData,
)
from webhooks import IDENTITY
from webhooks.dispatcher import Dispatcher, resolve_host
from webhooks.domain import (
    UnsafeTarget,
    check_address,
    check_url_shape,
    new_secret,
    parse_allowlist,
)
from webhooks.handlers import delivery_id, fan_out
from webhooks.models import (
    Delivery,
    DeliveryPublic,
    Subscription,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPublic,
)
from webhooks.projections import PROJECTION, delivery_public

PING_TYPE = "io.labelloop.webhook.ping.v1"

__all__ = ["IDENTITY", "register", "router", "subscribers"]

# Subscriptions carry signing secrets and reach out to URLs: admins only.
router = APIRouter(prefix="/api/webhooks", tags=["webhooks"], dependencies=[Depends(require_admin)])


@dataclass(frozen=True)
class FanOutDeps:
    """What the fan-out uses: the transactions, the dispatcher to wake, the attempt budget."""

    transactions: Transactions
    dispatcher: Dispatcher
    max_attempts: int


subscribers: EventSubscribers[FanOutDeps] = EventSubscribers(
    IDENTITY, produces=(WebhookSubscriptionCreated, WebhookSubscriptionDeleted)
)


@subscribers.handler(*EVENT_TYPES.values())
async def on_event(events: Sequence[CloudEvent[Any]], deps: FanOutDeps) -> None:
    """Queue a delivery per subscription that wants each event; wake the dispatcher.

    One handler for every type of every topic: a subscription may ask for any, and the batch
    is fanned out in one transaction.
    """
    if await asyncio.to_thread(fan_out, events, deps.transactions, deps.max_attempts):
        deps.dispatcher.wake()


def register(runtime: Runtime) -> None:
    dispatcher = Dispatcher(runtime.engine, runtime.settings)
    deps = FanOutDeps(
        runtime.transactions.bound(PROJECTION), dispatcher, runtime.settings.webhook_max_attempts
    )
    subscribers.subscribe(runtime, deps)
    runtime.background.append(dispatcher.run)


def _check_target(url: str, allowlist_text: str) -> None:
    host, port = check_url_shape(url)
    try:
        addresses = resolve_host(host, port)
    except OSError as error:
        raise UnsafeTarget(f"{host} does not resolve: {error}") from error
    allowlist = parse_allowlist(allowlist_text)
    for address in addresses:
        check_address(address, allowlist)


@router.post("", status_code=status.HTTP_201_CREATED)
def create_subscription(
    body: SubscriptionCreate, runtime: RuntimeDep, principal: PrincipalDep
) -> SubscriptionCreated:
    """Subscribe a URL to event types; the reply shows the signing secret, this once."""
    try:
        _check_target(body.url, runtime.settings.webhook_allowlist)
    except UnsafeTarget as unsafe:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(unsafe)) from unsafe
    subscription_id = "sub_" + uuid.uuid4().hex
    created = WebhookSubscriptionCreated.create(
        WebhookSubscriptionCreatedData(
            subscription_id=subscription_id,
            url=body.url,
            events=body.events,
            task_id=body.task_id,
            created_by=principal.name,
        ),
        source=IDENTITY.source,
        key=(subscription_id,),
        subject=subscription_id,
        taskid=body.task_id,
    )
    with runtime.transactions.bound(PROJECTION).unit_of_work() as uow:
        uow.record(created, key=subscription_id)
        subscription = uow.session.get(Subscription, subscription_id)
        assert subscription is not None
        subscription.secret = body.secret or new_secret()  # never in the event
        uow.session.add(subscription)
    return SubscriptionCreated.model_validate(subscription, from_attributes=True)


@router.get("")
def list_subscriptions(session: SessionDep, _: PrincipalDep) -> list[SubscriptionPublic]:
    rows = session.exec(select(Subscription).where(Subscription.active == True)).all()  # noqa: E712
    return [SubscriptionPublic.model_validate(row, from_attributes=True) for row in rows]


def _require(session: Session, subscription_id: str) -> Subscription:
    subscription = session.get(Subscription, subscription_id)
    if subscription is None or not subscription.active:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {subscription_id}")
    return subscription


@router.delete("/{subscription_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subscription(
    subscription_id: str, runtime: RuntimeDep, session: SessionDep, principal: PrincipalDep
) -> None:
    """Stop deliveries; the delivery log is kept."""
    subscription = _require(session, subscription_id)
    deleted = WebhookSubscriptionDeleted.create(
        WebhookSubscriptionDeletedData(subscription_id=subscription.id, deleted_by=principal.name),
        source=IDENTITY.source,
        key=(subscription.id, "deleted"),
        subject=subscription.id,
        taskid=subscription.task_id,
    )
    with runtime.transactions.bound(PROJECTION).unit_of_work() as uow:
        uow.record(deleted, key=subscription.id)


@router.post("/{subscription_id}/ping", status_code=status.HTTP_202_ACCEPTED)
def ping(subscription_id: str, session: SessionDep, _: PrincipalDep) -> DeliveryPublic:
    """Queue a signed test event to the subscription's URL."""
    subscription = _require(session, subscription_id)
    event_id = str(uuid.uuid4())
    document = {
        "specversion": "1.0",
        "id": event_id,
        "source": IDENTITY.source,
        "type": PING_TYPE,
        "time": utcnow().isoformat(),
        "subject": subscription.id,
        "datacontenttype": "application/json",
        "data": {"subscription_id": subscription.id},
    }
    delivery = Delivery(
        id=delivery_id(subscription.id, event_id),
        subscription_id=subscription.id,
        event_id=event_id,
        event_type=PING_TYPE,
        payload=json.dumps(document).encode(),
        allowed_attempts=1,
    )
    session.add(delivery)
    session.commit()
    return delivery_public(session, delivery)


@router.get("/{subscription_id}/deliveries")
def list_deliveries(
    subscription_id: str, session: SessionDep, _: PrincipalDep
) -> list[DeliveryPublic]:
    """Every delivery with its attempts: status code, latency, error."""
    subscription = session.get(Subscription, subscription_id)
    if subscription is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {subscription_id}")
    rows = session.exec(
        select(Delivery)
        .where(Delivery.subscription_id == subscription_id)
        .order_by(Delivery.created_at)  # type: ignore[arg-type]
    ).all()
    return [delivery_public(session, row) for row in rows]


@router.post("/{subscription_id}/deliveries/{delivery_id}/redeliver", status_code=202)
def redeliver(
    subscription_id: str,
    delivery_id: str,
    runtime: RuntimeDep,
    session: SessionDep,
    _: PrincipalDep,
) -> DeliveryPublic:
    """Send a delivery again (same `webhook-id`), with a fresh budget of attempts."""
    _require(session, subscription_id)
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.subscription_id != subscription_id:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no delivery {delivery_id}")
    if delivery.status == "pending":
        raise HTTPException(status.HTTP_409_CONFLICT, "the delivery is still being attempted")
    delivery.status = "pending"
    delivery.next_attempt_at = utcnow()
    delivery.allowed_attempts = delivery.attempts + runtime.settings.webhook_max_attempts
    session.add(delivery)
    session.commit()
    return delivery_public(session, delivery)
