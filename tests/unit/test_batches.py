"""Batch consumers: a bad message in a batch is isolated, nothing applied twice, processed ids
and outbox lookups for a whole batch at once (SQLite; the broker is a stand-in that records
what would be dead-lettered, the real one is in tests/integration/test_poison_messages.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from pydantic import BaseModel
from sqlmodel import Session, select

from labelloop.db import create_tables, get_engine
from labelloop.messaging.batches import apply_batch, each_valid
from labelloop.messaging.dlq import FailurePolicy
from labelloop.messaging.errors import TransientError
from labelloop.messaging.outbox import OutboxMessage, Transactions
from labelloop.projections import NOTHING
from labelloop.tasks import Task, task_created_event
from schemas.events import TaskCreated

POLICY = FailurePolicy(max_attempts=3, retry_pause_s=0)


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        "t", 0, offset, 0, 0, b"k", value, None, 1, len(value), headers=[("h", b"v")]
    )


@dataclass
class StandInBroker:
    published: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)

    async def publish(self, value: bytes, *, topic: str, key: bytes, headers: Any) -> None:
        self.published.append((topic, value, headers))


@dataclass
class Effects:
    """An idempotent consumer: each message applied at most once, whatever is redelivered."""

    poison: set[str]
    applied: list[str] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    transient: bool = False

    async def apply(self, messages: Sequence[str]) -> None:
        self.calls.append(list(messages))
        if self.transient:
            raise TransientError("the database is away")
        for message in messages:  # effects up to the bad one, then it fails (a partial batch)
            if message in self.poison:
                raise ValueError(f"cannot handle {message}")
            if message not in self.applied:
                self.applied.append(message)


async def test_a_bad_message_in_a_batch_is_dead_lettered_alone_and_the_rest_applied_once() -> None:
    messages = ["a", "b", "bad", "c"]
    records = [record(offset, m.encode()) for offset, m in enumerate(messages)]
    effects, broker = Effects(poison={"bad"}), StandInBroker()
    await apply_batch(messages, records, effects.apply, broker=broker, policy=POLICY)  # type: ignore[arg-type]
    assert effects.applied == ["a", "b", "c"], "in order, each once"
    assert effects.calls[0] == messages, "the whole batch first"
    assert effects.calls.count(["bad"]) == POLICY.max_attempts
    assert [(topic, value) for topic, value, _ in broker.published] == [("t.dlq", b"bad")]
    headers = broker.published[0][2]
    assert headers["dlq-original-offset"] == "2" and "cannot handle bad" in headers["dlq-error"]
    assert headers["h"] == "v", "the original headers travel with it"


async def test_a_transient_failure_fails_the_batch_for_a_retry_and_dead_letters_nothing() -> None:
    effects, broker = Effects(poison=set(), transient=True), StandInBroker()
    with pytest.raises(TransientError):
        await apply_batch(
            ["a", "b"],
            [record(0, b"a"), record(1, b"b")],
            effects.apply,
            broker=broker,  # type: ignore[arg-type]
            policy=POLICY,
        )
    assert broker.published == [] and len(effects.calls) == 1


class Greeting(BaseModel):
    hello: str


@dataclass
class StandInMessage:
    raw_message: tuple[ConsumerRecord[bytes, bytes], ...]


async def test_the_decoder_keeps_valid_records_and_dead_letters_each_invalid_one() -> None:
    broker = StandInBroker()
    decode = each_valid(broker, Greeting)  # type: ignore[arg-type]
    raw = (
        record(0, json.dumps({"hello": "a"}).encode()),
        record(1, b"not json {"),
        record(2, json.dumps({"bye": "b"}).encode()),
        record(3, json.dumps({"hello": "c"}).encode()),
    )
    message = StandInMessage(raw)
    decoded = await decode(message, None)  # type: ignore[arg-type]
    assert [greeting.hello for greeting in decoded] == ["a", "c"]
    assert [headers["dlq-original-offset"] for _, _, headers in broker.published] == ["1", "2"]
    assert [r.offset for r in message.labelloop_records] == [0, 3], "records beside messages"  # type: ignore[attr-defined]


def event(task_id: str) -> TaskCreated:
    return task_created_event(Task(id=task_id, name=task_id, labels=["car"], created_by="test"))


def test_a_unit_of_work_for_a_batch_marks_each_message_and_skips_those_done(
    tmp_path: Path,
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/uow.db")
    create_tables(engine)
    transactions = Transactions(engine)
    with transactions.unit_of_work("c", ["m1", "m2"]) as uow:
        assert uow.done == set() and not uow.already_done
    with transactions.unit_of_work("c", ["m2", "m3", "m3"]) as uow:
        assert uow.done == {"m2"} and not uow.already_done
        assert uow.message_ids == ("m2", "m3"), "a message twice in a batch is one message"
    with transactions.unit_of_work("c", ["m1", "m3"]) as uow:
        assert uow.already_done
    with transactions.unit_of_work("other", "m1") as uow:
        assert not uow.already_done, "processed ids are per consumer"


def test_record_all_records_each_event_once_across_calls_and_within_one(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path}/outbox.db")
    create_tables(engine)
    transactions = Transactions(engine, projection=NOTHING)
    first, second = event("t1"), event("t2")
    with transactions.unit_of_work() as uow:
        assert uow.record_all([first, first]) == [first]
    with transactions.unit_of_work() as uow, uow.session.no_autoflush:
        assert uow.record_all([first, second, second]) == [second]
        assert not uow.record(second), "seen in this transaction, unflushed"
    with Session(engine) as session:
        rows = session.exec(select(OutboxMessage.event_id).order_by(OutboxMessage.seq)).all()  # type: ignore[arg-type]
    assert rows == [first.id, second.id]
