"""Pure rules of labeler-assist: valid boxes, and when a label threshold is crossed."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import FrameLabels


@dataclass(frozen=True)
class FrameSize:
    width: int
    height: int


class InvalidAnnotation(ValueError):
    """An annotation the API refuses; the message names the frame and the box."""


def validate_frame_labels(labels: FrameLabels, size: FrameSize, allowed_labels: set[str]) -> None:
    """Every box has a label of the task and lies inside the frame."""
    for index, box in enumerate(labels.boxes):
        where = f"{labels.frame} box {index}"
        if box.label not in allowed_labels:
            raise InvalidAnnotation(
                f"{where}: label {box.label!r} is not one of the task's {sorted(allowed_labels)}"
            )
        if box.x + box.w > size.width or box.y + box.h > size.height:
            raise InvalidAnnotation(
                f"{where}: ({box.x}, {box.y}, {box.w}x{box.h}) leaves the "
                f"{size.width}x{size.height} frame"
            )


def new_crossings(labeled_frames: int, threshold: int, announced: int) -> list[int]:
    """Crossing numbers still to announce: one per further ``threshold`` labeled frames."""
    return list(range(announced + 1, labeled_frames // threshold + 1))
