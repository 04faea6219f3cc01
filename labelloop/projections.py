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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from schemas.envelope import CloudEvent

Projector = Callable[[Session, Any], object]
"""Applies one event to the session (adds, updates or deletes rows; never commits)."""
BatchProjector = Callable[[Session, Sequence[Any]], object]
"""Applies consecutive events of one type, exactly as the single projector would one after the
other, with one lookup per table instead of one per event (a replay's bulk path)."""


@dataclass(frozen=True)
class Projection:
    """What one service projects: its tables, the function applying each event type, and for
    the busiest types a batch function doing the same for a run of them."""

    tables: tuple[str, ...]
    appliers: Mapping[type[CloudEvent[Any]], Projector]
    batch_appliers: Mapping[type[CloudEvent[Any]], BatchProjector] = field(default_factory=dict)
