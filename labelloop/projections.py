"""Projections: the tables that events alone determine, and the functions that apply them.

Each service declares one :class:`Projection`: its tables, the function applying each event
type, and for the busiest types a batch function. Live and replay dispatch through the same
two methods, :meth:`Projection.apply` and :meth:`Projection.apply_run`: a handler records an
event with ``uow.record(event)`` (:mod:`labelloop.messaging.outbox`), which applies it here in
the transaction that puts it in the outbox, and ``labelloop replay`` applies the same event
from Kafka the same way. The live row and the replayed row are therefore made by one piece of
code from one event (timestamps included: a row's time is its event's ``time``), which is what
lets an auditor trust a database rebuilt from Kafka alone.

Each function is idempotent and depends only on earlier events of the same task on the same
topic, the order Kafka keeps, so a replay may read topics in any order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import groupby
from typing import Any, TypeVar

from sqlmodel import Session, SQLModel, select

from schemas.envelope import CloudEvent

ModelT = TypeVar("ModelT", bound=SQLModel)

Projector = Callable[[Session, Any], object]
"""Applies one event to the session (adds, updates or deletes rows; never commits)."""
BatchProjector = Callable[[Session, Sequence[Any]], object]
"""Applies consecutive events of one type, exactly as the single projector would one after the
other, with one lookup per table instead of one per event (a replay's bulk path)."""
Auditor = Callable[[Session, str], Mapping[str, list[Any]]]
"""A task's rows in a service's tables, as ``labelloop audit task`` shows them (by section)."""


@dataclass(frozen=True)
class Projection:
    """What one service projects: its tables, the function applying each event type, and for
    the busiest types a batch function doing the same for a run of them."""

    tables: tuple[str, ...]
    appliers: Mapping[type[CloudEvent[Any]], Projector]
    batch_appliers: Mapping[type[CloudEvent[Any]], BatchProjector] = field(default_factory=dict)
    audit: Auditor | None = None
    """What an auditor sees of one task in this service's tables (None: nothing)."""
    unreplayed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Columns of its tables that no event carries (a secret): a replay leaves them empty."""

    def apply(self, session: Session, event: CloudEvent[Any]) -> None:
        """Apply one event with its type's function; an event of another type changes nothing."""
        applier = self.appliers.get(type(event))
        if applier is not None:
            applier(session, event)

    def apply_run(self, session: Session, events: Sequence[CloudEvent[Any]]) -> None:
        """Apply the events this projection takes, in order: each run of consecutive events
        that share a batch function in one call of it (one by one for a type without one)."""
        batches = self._batches
        mine = [event for event in events if type(event) in batches]
        for batch, run in groupby(mine, key=lambda event: batches[type(event)]):
            batch(session, list(run))

    @cached_property
    def _batches(self) -> dict[type[CloudEvent[Any]], BatchProjector]:
        """Each type's batch function, made once so a run of one type groups as one."""
        return {
            event_class: self.batch_appliers.get(event_class, _one_by_one(applier))
            for event_class, applier in self.appliers.items()
        }


def _one_by_one(applier: Projector) -> BatchProjector:
    def apply_each(session: Session, events: Sequence[Any]) -> None:
        for event in events:
            applier(session, event)

    return apply_each


def task_rows(session: Session, model: Any, task_id: str, order: Any) -> list[Any]:
    """The rows of ``model`` belonging to ``task_id`` (its ``task_id`` column), in ``order``."""
    return list(session.exec(select(model).where(model.task_id == task_id).order_by(order)))


def task_documents(
    session: Session, model: Any, task_id: str, order: Any, public: Any = None
) -> list[dict[str, Any]]:
    """:func:`task_rows` as JSON documents (through the ``public`` model when one is given),
    what an :data:`Auditor` returns."""
    rows = task_rows(session, model, task_id, order)
    if public is not None:
        rows = [public.model_validate(row, from_attributes=True) for row in rows]
    return [row.model_dump(mode="json") for row in rows]


NOTHING = Projection(tables=(), appliers={})
"""Projects no event: transactions bound to it only record events (tools and tests)."""
