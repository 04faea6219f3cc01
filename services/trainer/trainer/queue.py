"""The training queue's rules, pure: priority with aging, and coalescing per task.

Effective priority = ``priority - waited_s / aging_s``; the lowest runs first, ties by the
earliest enqueue. With ``aging_s`` = 600 a P3 request that has waited 20 minutes (effective
1.0) runs before a P2 request enqueued just now (2.0), and after 30 minutes it ranks with a
fresh P0, so nothing starves.

Preemption (``LABELLOOP_TRAINER_PREEMPTION``): ``conservative`` (the default) never stops a
running run. ``aggressive`` checkpoints the running run of the lowest declared priority when the
run that would start next has a strictly higher *declared* priority, and requeues it to resume
from that checkpoint. Aging orders the queue but never preempts: two runs could otherwise take
turns stopping each other.

Coalescing: a task has at most one queued request. Threshold events for a task whose request
is still queued merge into it; events arriving while its run trains create one follow-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


QUEUE_DEPTH_QUERY = "SELECT count(*) FROM training_requests WHERE status IN ('queued', 'running')"
"""Runs waiting or training: what the chart's KEDA trigger sizes the trainer pods on (the chart
holds a copy; tests/deploy keeps them equal, and the trainer's integration tests run it)."""


@dataclass(frozen=True)
class Candidate:
    request_id: str
    task_id: str
    priority: int
    enqueued_at: datetime


def effective_priority(priority: int, waited_s: float, aging_s: float) -> float:
    """Lower runs sooner; one level gained per ``aging_s`` seconds waited."""
    return priority - max(waited_s, 0.0) / aging_s


def pick_next(
    queued: Sequence[Candidate], now: datetime, aging_s: float, busy_tasks: set[str]
) -> Candidate | None:
    """The request to start now; never a second run of a task that is already training."""
    ready = [c for c in queued if c.task_id not in busy_tasks]
    if not ready:
        return None
    return min(
        ready,
        key=lambda c: (
            effective_priority(c.priority, (now - c.enqueued_at).total_seconds(), aging_s),
            c.enqueued_at,
        ),
    )


class Preemption(StrEnum):
    CONSERVATIVE = "conservative"
    AGGRESSIVE = "aggressive"


@dataclass(frozen=True)
class Running:
    request_id: str
    priority: int
    started_at: datetime


def preemption_victim(
    policy: Preemption,
    running: Sequence[Running],
    queued: Sequence[Candidate],
    now: datetime,
    aging_s: float,
    busy_tasks: set[str],
) -> Running | None:
    """The run to checkpoint and requeue so that a more urgent one can start, if any."""
    if policy is Preemption.CONSERVATIVE or not running:
        return None
    challenger = pick_next(queued, now, aging_s, busy_tasks)
    if challenger is None:
        return None
    # The least urgent run, and of those the one that started last (it loses the least).
    victim = max(running, key=lambda r: (r.priority, r.started_at))
    return victim if challenger.priority < victim.priority else None


class Enqueue(StrEnum):
    """What a threshold event does to the queue."""

    NEW = "new"  # nothing queued or running for the task: queue a run
    MERGED = "merged"  # a run is queued already: it will see these labels too
    FOLLOW_UP = "follow-up"  # the task is training: queue one run after it


def enqueue_decision(has_queued: bool, has_running: bool) -> Enqueue:
    if has_queued:
        return Enqueue.MERGED
    return Enqueue.FOLLOW_UP if has_running else Enqueue.NEW
