"""Pure job cutting, the way CVAT does it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from schemas.events import MAX_FRAMES_PER_EVENT

MAX_JOB_FRAMES = MAX_FRAMES_PER_EVENT
"""Frames one job holds at most: a job is announced by one event, which must fit the broker.
A task asking for bigger jobs (``segment_size`` 0 on a bigger task) gets jobs of this size."""
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``frame2`` before ``frame10`` (numbers compare as numbers)."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part.lower())
        for part in _DIGITS.split(name)
        if part
    )


@dataclass(frozen=True)
class JobPlan:
    index: int
    start_frame: int
    stop_frame: int
    """Inclusive, like CVAT."""
    frames: tuple[str, ...]


def segment_ranges(frame_count: int, segment_size: int, overlap: int) -> list[tuple[int, int]]:
    """CVAT's segments: ``segment_size`` 0 (or ≥ the frame count) means one job; otherwise
    starts advance by ``segment_size - overlap`` over the whole task and each stop is clipped
    to the last frame, as CVAT's task creation does (so a short last job may lie inside the one
    before it, exactly as in CVAT). One difference: no job exceeds :data:`MAX_JOB_FRAMES`, a
    bigger segment (0 included) is cut at that size.
    """
    if frame_count <= 0:
        return []
    if segment_size <= 0 or segment_size >= frame_count:
        segment_size = frame_count
    segment_size = min(segment_size, MAX_JOB_FRAMES)
    if segment_size >= frame_count:
        return [(0, frame_count - 1)]
    if not 0 <= overlap <= segment_size // 2:
        raise ValueError("overlap must be in [0, segment_size // 2] (CVAT's limit)")
    step = segment_size - overlap
    return [
        (start, min(start + segment_size - 1, frame_count - 1))
        for start in range(0, frame_count, step)
    ]


def plan_jobs(frames: list[str], segment_size: int, overlap: int) -> list[JobPlan]:
    ordered = sorted(frames, key=natural_key)
    return [
        JobPlan(index, start, stop, tuple(ordered[start : stop + 1]))
        for index, (start, stop) in enumerate(segment_ranges(len(ordered), segment_size, overlap))
    ]


def job_id(task_id: str, index: int) -> str:
    """Deterministic: the same task and index always name the same job."""
    return f"{task_id}-j{index:04d}"
