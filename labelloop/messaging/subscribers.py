"""Typed subscribers: one handler per event type a service consumes, chosen by the event's type.

A service declares its handlers on one :class:`EventSubscribers`, as a FastAPI service declares
its routes on an ``APIRouter``::

    subscribers: EventSubscribers[Transactions] = EventSubscribers(IDENTITY, produces=(...))

    @subscribers.handler(LabelsThresholdReached)
    async def on_threshold_reached(
        events: Sequence[LabelsThresholdReached], transactions: Transactions
    ) -> None:
        \"\"\"Queue a run for each threshold crossing.\"\"\"

and ``register(runtime)`` subscribes them with the service's dependencies:
``subscribers.subscribe(runtime, transactions)``. The topics follow from the types handled
(each type's topic is its contract's, :func:`schemas.topics.topic_carrying`), the consumer group
from the service's :class:`~labelloop.identity.ServiceIdentity`.

One batch consumer per service (:mod:`labelloop.messaging.batches`: per-message
idempotency, a poison message isolated by splitting, transient failures retried, offsets
committed after): each record is validated against every type of its topic (a bad one is
dead-lettered by every group that reads the topic), then dispatched by its class (the one its
CloudEvents ``type`` selected) through a dict. What one batch calls, in order (:meth:`plan`):

1. each *whole-batch* handler once, with every message of its types in the batch, in order:
   for a view that the other handlers of the same batch read (labeler-assist remembers the
   batch's frames before it pre-annotates a job of them);
2. then every other handler with each run of consecutive messages that share it, the types
   nobody handles left out: one task's events keep their order, and a run is one call (one
   transaction where the handler makes one). A handler declared for several types gets their
   mixed runs: for types that must commit together (jobgen's listing parts and the
   ``task.data-ready`` after them), and for consumers of everything (webhooks, the timeline).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Generic, TypeVar, overload

from faststream.kafka import KafkaBroker

from labelloop.config import Settings
from labelloop.identity import ServiceIdentity
from labelloop.messaging.batches import Apply, Wiring, subscribe_batches
from schemas.envelope import CloudEvent
from schemas.events import event_union
from schemas.topics import Topic, messages_on, topic_carrying

DepsT = TypeVar("DepsT")
M = TypeVar("M")
"""The messages a handler function takes."""
# The first, second and third message type a handler is declared for (its argument's union).
FirstT = TypeVar("FirstT")
SecondT = TypeVar("SecondT")
ThirdT = TypeVar("ThirdT")

HandlerFn = Callable[[Sequence[M], DepsT], Awaitable[None]]
"""``handler(messages, deps)``: the messages of one run (or batch), and the service's deps."""


@dataclass(frozen=True, eq=False)
class Handler(Generic[DepsT]):
    """One declared handler: the types it takes, whether it sees the whole batch, its function."""

    takes: tuple[type[Any], ...]
    call: HandlerFn[Any, DepsT]
    whole_batch: bool = False

    @property
    def name(self) -> str:
        return self.call.__name__

    @property
    def summary(self) -> str:
        """Its docstring's first paragraph, on one line: what it does, as the event table and
        the AsyncAPI document show it."""
        first = (self.call.__doc__ or "").strip().split("\n\n")[0]
        return " ".join(line.strip() for line in first.splitlines())


def type_name(message: type[Any]) -> str:
    """A message class's name in documents: its CloudEvents ``type``, else the class name."""
    if issubclass(message, CloudEvent):
        return message.event_type()
    return message.__name__


class EventSubscribers(Generic[DepsT]):
    """A service's handlers, its identity and the event types it produces (see the module)."""

    def __init__(
        self,
        identity: ServiceIdentity,
        *,
        produces: Iterable[type[CloudEvent[Any]]] = (),
        max_records: Callable[[Settings], int] | None = None,
    ) -> None:
        """``produces``: every event type this service records (in handlers, routes, runs),
        for the AsyncAPI document and the event table (a test checks it against the code).
        ``max_records``: its batch size from the settings (default ``consumer_batch_max``)."""
        self.identity = identity
        self.produces = tuple(produces)
        self.handlers: list[Handler[DepsT]] = []
        self._max_records = max_records
        self._by_type: dict[type[Any], Handler[DepsT]] = {}
        self._whole: dict[type[Any], Handler[DepsT]] = {}

    @overload
    def handler(
        self, first: type[FirstT], /, *, whole_batch: bool = False
    ) -> Callable[[HandlerFn[FirstT, DepsT]], HandlerFn[FirstT, DepsT]]: ...

    @overload
    def handler(
        self, first: type[FirstT], second: type[SecondT], /, *, whole_batch: bool = False
    ) -> Callable[[HandlerFn[FirstT | SecondT, DepsT]], HandlerFn[FirstT | SecondT, DepsT]]: ...

    @overload
    def handler(
        self,
        first: type[FirstT],
        second: type[SecondT],
        third: type[ThirdT],
        /,
        *,
        whole_batch: bool = False,
    ) -> Callable[
        [HandlerFn[FirstT | SecondT | ThirdT, DepsT]], HandlerFn[FirstT | SecondT | ThirdT, DepsT]
    ]: ...

    @overload
    def handler(
        self, *takes: type[CloudEvent[Any]], whole_batch: bool = False
    ) -> Callable[[HandlerFn[CloudEvent[Any], DepsT]], HandlerFn[CloudEvent[Any], DepsT]]: ...

    def handler(
        self, *takes: type[Any], whole_batch: bool = False
    ) -> Callable[[HandlerFn[Any, DepsT]], HandlerFn[Any, DepsT]]:
        """Declare the decorated function the handler of ``takes`` (see the module for how a
        batch is dispatched). A type has at most one handler of each kind."""
        if not takes:
            raise ValueError("a handler takes at least one message type")
        for message in takes:
            topic_carrying(message)  # a type no topic carries fails here, at import

        def declare(call: HandlerFn[Any, DepsT]) -> HandlerFn[Any, DepsT]:
            declared = Handler(tuple(takes), call, whole_batch)
            index = self._whole if whole_batch else self._by_type
            for message in takes:
                if message in index:
                    twice = f"{index[message].name} and {call.__name__}"
                    raise ValueError(f"{message.__name__} has two handlers: {twice}")
                index[message] = declared
            self.handlers.append(declared)
            return call

        return declare

    @property
    def takes(self) -> tuple[type[Any], ...]:
        """Every message class some handler takes, in declaration order."""
        return tuple(dict.fromkeys(m for handler in self.handlers for m in handler.takes))

    @property
    def topics(self) -> tuple[Topic, ...]:
        """The topics it consumes: those carrying the types it takes, in the contract's order."""
        wanted = {topic_carrying(message) for message in self.takes}
        return tuple(topic for topic in Topic if topic in wanted)

    def handlers_of(self, message: type[Any]) -> list[Handler[DepsT]]:
        """The handlers a message of class ``message`` reaches, in the order they are called."""
        found = [self._whole.get(message), self._by_type.get(message)]
        return [handler for handler in found if handler is not None]

    def plan(self, messages: Sequence[Any]) -> list[tuple[Handler[DepsT], list[Any]]]:
        """The calls one batch makes, in order: each whole-batch handler with all the messages
        of its types, then each run of consecutive messages that share a handler."""
        calls: list[tuple[Handler[DepsT], list[Any]]] = []
        for handler in self.handlers:
            if handler.whole_batch:
                mine = [message for message in messages if type(message) in handler.takes]
                if mine:
                    calls.append((handler, mine))
        routed = [(self._by_type[type(m)], m) for m in messages if type(m) in self._by_type]
        for handler, run in groupby(routed, key=lambda pair: pair[0]):
            calls.append((handler, [message for _, message in run]))
        return calls

    def dispatcher(self, deps: DepsT) -> Apply:
        """The batch function that calls the handlers with ``deps`` (:meth:`plan`)."""

        async def dispatch(messages: Sequence[Any]) -> None:
            for handler, run in self.plan(messages):
                await handler.call(run, deps)

        dispatch.__doc__ = self.description()
        return dispatch

    def subscribe(self, runtime: Wiring, deps: DepsT) -> None:
        """Subscribe the handlers to the broker: one batch consumer in the service's group."""
        self._attach(runtime, self.dispatcher(deps))

    def document(self, broker: KafkaBroker) -> None:
        """Declare the same subscriber on a broker that never starts, with the logical topic
        and group names, for the AsyncAPI document; its handlers are never called."""

        async def never(messages: Sequence[Any]) -> None:
            raise RuntimeError("a documentation subscriber does not consume")

        self._attach(_Documenting(broker, Settings.model_construct()), never)

    def _attach(self, runtime: Wiring, apply: Apply) -> None:
        topics = self.topics
        if not topics:
            return
        settings, group = runtime.settings, self.identity.consumer_group
        subscribe_batches(
            runtime,
            topics,
            group=group,
            model=_wire_model(topics),
            handled=self.takes,
            apply=apply,
            # FastStream names a channel per topic "<title>:<topic>", but one topic "<title>"
            title=group if len(topics) > 1 else f"{group}:{topics[0].value}",
            description=self.description(),
            max_records=self._max_records(settings) if self._max_records else None,
        )

    def description(self) -> str:
        """What the consumer does, handler by handler (its AsyncAPI description)."""
        lines = [f"Consumer group `{self.identity.consumer_group}` ({self.identity.name})."]
        for handler in self.handlers:
            types = ", ".join(f"`{type_name(m)}`" for m in handler.takes)
            scope = " (the whole batch first)" if handler.whole_batch else ""
            lines.append(f"{types} → `{handler.name}`{scope}: {handler.summary}")
        return "\n".join(lines)


@dataclass
class _Documenting:
    broker: KafkaBroker
    settings: Settings


def _wire_model(topics: Sequence[Topic]) -> Any:
    """What a record on ``topics`` must parse as: one of their message types."""
    if Topic.STORAGE_OBJECTS not in topics:
        return event_union(*topics)
    if len(topics) > 1:
        raise ValueError("a consumer of the object store's records consumes nothing else")
    first, *others = messages_on(Topic.STORAGE_OBJECTS)
    model: Any = first
    for other in others:
        model = model | other
    return model
