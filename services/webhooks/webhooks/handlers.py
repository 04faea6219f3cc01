"""webhooks' handler: fan each consumed event out into one pending delivery per subscription.

Deliveries are rows first (committed with the consumer's offset handling, so none is lost),
then sent by :class:`webhooks.dispatcher.Dispatcher`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_
from sqlmodel import col, select

from labelloop.messaging.outbox import Transactions
from schemas.envelope import CloudEvent
from webhooks import IDENTITY
from webhooks.models import Delivery, Subscription

_DELIVERY_NAMESPACE = uuid.UUID("0b8f0d55-3f5e-4a7e-8d4e-2f8d1c9a6b31")


def delivery_id(subscription_id: str, event_id: str) -> str:
    """Stable per subscription and event: receivers dedupe on it across retries."""
    return "msg_" + uuid.uuid5(_DELIVERY_NAMESPACE, f"{subscription_id}:{event_id}").hex


def fan_out(
    events: Sequence[CloudEvent[Any]], transactions: Transactions, max_attempts: int
) -> list[str]:
    """One pending delivery per active subscription that wants each event; a batch at once."""
    if not events:
        return []
    with transactions.unit_of_work(IDENTITY.consumer, [event.id for event in events]) as uow:
        if uow.already_done:
            return []
        task_ids = {event.taskid for event in events if event.taskid}
        subscriptions = uow.session.exec(
            select(Subscription).where(
                col(Subscription.active).is_(True),
                or_(col(Subscription.task_id).is_(None), col(Subscription.task_id).in_(task_ids)),
            )
        ).all()
        created = []
        for event in events:
            if event.id in uow.done:
                continue
            uow.done.add(event.id)  # once, even if the batch holds it twice
            for subscription in subscriptions:
                if event.type not in subscription.events or subscription.task_id not in {
                    None,
                    event.taskid,
                }:
                    continue
                identifier = delivery_id(subscription.id, event.id)
                if uow.session.get(Delivery, identifier) is not None:
                    continue
                uow.session.add(
                    Delivery(
                        id=identifier,
                        subscription_id=subscription.id,
                        event_id=event.id,
                        event_type=event.type,
                        task_id=event.taskid,
                        payload=event.model_dump_json().encode(),
                        allowed_attempts=max_attempts,
                    )
                )
                created.append(identifier)
    return created
