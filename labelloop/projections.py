"""Projections: the tables that events alone determine, and the functions that apply them.

A handler that changes one of these tables builds the event first, then applies it with the
same function ``labelloop replay`` uses, in the transaction that records the event in the
outbox. The live row and the replayed row are therefore made by one piece of code from one
event (timestamps included: a row's time is its event's ``time``), which is what lets an
auditor trust a database rebuilt from Kafka alone.

Each function is idempotent and depends only on earlier events of the same task on the same
topic, the order Kafka keeps, so a replay may read topics in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from schemas.envelope import CloudEvent

Projector = Callable[[Session, Any], object]
"""Applies one event to the session (adds, updates or deletes rows; never commits)."""


@dataclass(frozen=True)
class Projection:
    """What one service projects: its tables, and the function applying each event type."""

    tables: tuple[str, ...]
    appliers: Mapping[type[CloudEvent[Any]], Projector]
