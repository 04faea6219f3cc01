"""Label validation and threshold crossings."""

from __future__ import annotations

import pytest

from labeler_assist.domain import (
    FrameSize,
    InvalidAnnotation,
    new_crossings,
    validate_frame_labels,
)
from schemas.events import FrameLabels, LabeledBox


@pytest.mark.parametrize(
    ("labeled", "threshold", "announced", "expected"),
    [
        (4, 5, 0, []),
        (5, 5, 0, [1]),
        (12, 5, 1, [2]),
        (17, 5, 1, [2, 3]),
        (17, 5, 3, []),
        (100, 10, 9, [10]),
    ],
)
def test_crossings(labeled: int, threshold: int, announced: int, expected: list[int]) -> None:
    assert new_crossings(labeled, threshold, announced) == expected


def labels(*boxes: LabeledBox) -> FrameLabels:
    return FrameLabels(frame="a.jpg", boxes=list(boxes))


def test_valid_boxes_pass() -> None:
    validate_frame_labels(
        labels(LabeledBox(label="car", x=0, y=0, w=64, h=48)), FrameSize(64, 48), {"car"}
    )
    validate_frame_labels(labels(), FrameSize(64, 48), {"car"})  # checked, nothing there


@pytest.mark.parametrize(
    ("box", "message"),
    [
        (LabeledBox(label="bus", x=0, y=0, w=5, h=5), "not one of"),
        (LabeledBox(label="car", x=60, y=0, w=5, h=5), "leaves the 64x48 frame"),
        (LabeledBox(label="car", x=0, y=44, w=5, h=5), "leaves"),
    ],
)
def test_invalid_boxes_name_the_problem(box: LabeledBox, message: str) -> None:
    with pytest.raises(InvalidAnnotation, match=message):
        validate_frame_labels(labels(box), FrameSize(64, 48), {"car"})
