"""Pure job cutting, the way CVAT does it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from schemas.events import MAX_FRAMES_PER_EVENT

MAX_JOB_FRAMES = MAX_FRAMES_PER_EVENT
"""Frames one job holds at most: a job is announced by one event, which must fit the broker.
A task asking for bigger jobs (``segment_size`` 0 on a bigger task) gets jobs of this size."""
_DIGITS = re.compile(r"(\d+)")
_NUL, _ESCAPED_NUL = "\x00", "\x00\x03"


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
    return list(segments(frame_count, segment_size, overlap))


def segments(frame_count: int, segment_size: int, overlap: int) -> Iterator[tuple[int, int]]:
    """:func:`segment_ranges` one at a time (a task of tiny jobs has as many as frames); the
    arguments are checked at once, not when the first segment is read."""
    if frame_count <= 0:
        return iter(())
    if segment_size <= 0 or segment_size >= frame_count:
        segment_size = frame_count
    segment_size = min(segment_size, MAX_JOB_FRAMES)
    if segment_size >= frame_count:
        return iter([(0, frame_count - 1)])
    if not 0 <= overlap <= segment_size // 2:
        raise ValueError("overlap must be in [0, segment_size // 2] (CVAT's limit)")
    step = segment_size - overlap
    return (
        (start, min(start + segment_size - 1, frame_count - 1))
        for start in range(0, frame_count, step)
    )


def plan_jobs(frames: list[str], segment_size: int, overlap: int) -> list[JobPlan]:
    ordered = sorted(frames, key=natural_key)
    return list(cut_jobs(ordered, len(ordered), segment_size, overlap))


def cut_jobs(
    ordered: Iterable[str], frame_count: int, segment_size: int, overlap: int
) -> Iterator[JobPlan]:
    """The jobs of ``frame_count`` frames given in natural order, each as soon as its frames
    have been read: only the current job's frames are held, however big the task (consecutive
    jobs overlap by less than a job, and a job starts at most one frame past the last one)."""
    names = iter(ordered)
    window: list[str] = []
    first = 0  # the task position of window[0]
    for index, (start, stop) in enumerate(segments(frame_count, segment_size, overlap)):
        del window[: start - first]
        first = start
        while first + len(window) <= stop:
            name = next(names, None)
            if name is None:
                raise ValueError(f"{first + len(window)} frames given, {frame_count} announced")
            window.append(name)
        yield JobPlan(index, start, stop, tuple(window[: stop - start + 1]))


def sort_key(name: str, position: int) -> bytes:
    """Bytes that order as ``(natural_key(name), position)`` does, compared byte by byte (a
    database's ``BLOB``/``bytea`` order): the database sorts a big task's listing, so jobgen
    never holds it. ``position`` (the name's place in the listing) keeps equal natural keys in
    listing order, as Python's stable sort does, and makes every key unique.

    Built as text whose code-point order is the natural key's, then UTF-8 (which keeps that
    order byte by byte): a number part is ``01``, its digit count as one character and its
    digits without leading zeros (a longer number is a bigger one); a text part is ``02``, the
    lower-cased text with NUL escaped as ``00 03`` and ``00`` after it; ``00`` after the last
    part sorts a key before every key that continues it.
    """
    pieces = []
    for part in _DIGITS.split(name):
        if not part:
            continue
        if part.isdigit():  # as natural_key: int() for any other digits
            digits = (part.lstrip("0") or "0") if part.isascii() else str(int(part))
            pieces.append(f"\x01{chr(len(digits))}{digits}")
        else:
            pieces.append(f"\x02{part.lower().replace(_NUL, _ESCAPED_NUL)}\x00")
    pieces.append("\x00")
    return "".join(pieces).encode("utf-8", "surrogatepass") + position.to_bytes(8, "big")


def job_id(task_id: str, index: int) -> str:
    """Deterministic: the same task and index always name the same job."""
    return f"{task_id}-j{index:04d}"
