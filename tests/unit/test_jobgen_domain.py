"""Job cutting, checked against CVAT's segment rule."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobgen.domain import MAX_JOB_FRAMES, job_id, natural_key, plan_jobs, segment_ranges
from labelloop.tasks import TaskCreate


def test_natural_sort() -> None:
    names = ["frame10.jpg", "frame2.jpg", "Frame1.jpg", "frame100.jpg"]
    assert sorted(names, key=natural_key) == [
        "Frame1.jpg",
        "frame2.jpg",
        "frame10.jpg",
        "frame100.jpg",
    ]


@pytest.mark.parametrize(
    ("count", "size", "overlap", "expected"),
    [
        (23, 10, 0, [(0, 9), (10, 19), (20, 22)]),
        (23, 10, 2, [(0, 9), (8, 17), (16, 22)]),
        (23, 0, 0, [(0, 22)]),
        (5, 10, 0, [(0, 4)]),
        (20, 10, 0, [(0, 9), (10, 19)]),
        # CVAT keeps a short last segment even when the previous one already covers it
        (18, 10, 2, [(0, 9), (8, 17), (16, 17)]),
        (0, 10, 0, []),
    ],
)
def test_cvat_segments(
    count: int, size: int, overlap: int, expected: list[tuple[int, int]]
) -> None:
    assert segment_ranges(count, size, overlap) == expected


def test_overlap_limit() -> None:
    with pytest.raises(ValueError, match="segment_size // 2"):
        segment_ranges(30, 10, 6)


def test_plans_cover_every_frame_once_without_overlap() -> None:
    frames = [f"{i}.png" for i in range(37)]
    plans = plan_jobs(frames, 8, 0)
    assert [f for plan in plans for f in plan.frames] == sorted(frames, key=natural_key)
    assert job_id("t1", plans[1].index) == "t1-j0001"


def test_no_job_outgrows_one_event() -> None:
    """A job is announced by one event: segment 0 on a big task gives jobs of the maximum."""
    assert segment_ranges(MAX_JOB_FRAMES, 0, 0) == [(0, MAX_JOB_FRAMES - 1)]
    assert segment_ranges(1200, 0, 0) == [(0, 499), (500, 999), (1000, 1199)]
    assert segment_ranges(100_000, 0, 0)[-1] == (99_500, 99_999)
    with pytest.raises(ValidationError, match="less than or equal to 500"):
        TaskCreate(name="t", labels=["car"], segment_size=MAX_JOB_FRAMES + 1)
