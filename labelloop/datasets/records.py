"""A dataset as the exporters write it and the importers read it, free of any format.

Boxes are in pixels with ``x``/``y`` the top-left corner (the API's shape) on the frame's
displayed size; each format converts at its edge (COCO's ``[x, y, w, h]``, YOLO's normalised
centres, CVAT's and VOC's corners).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A dataset that cannot be read or written as asked; the message says where and why."""


@dataclass(frozen=True)
class Box:
    """One box in pixels; ``score`` is a model's confidence (None for a human's label)."""

    label: str
    x: float
    y: float
    w: float
    h: float
    score: float | None = None

    def api_shape(self) -> dict[str, Any]:
        """``{"label", "x", "y", "w", "h"}``: a label as the annotations route takes it."""
        return {"label": self.label, "x": self.x, "y": self.y, "w": self.w, "h": self.h}

    @property
    def corners(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: what CVAT and VOC write."""
        return self.x, self.y, self.x + self.w, self.y + self.h


@dataclass(frozen=True)
class Item:
    """One frame: its file name, displayed size, labels and pre-annotations.

    ``labels`` is None for a frame nobody labeled, and empty for one checked and found empty:
    formats that cannot tell the two apart are written only with labeled frames as training
    data (YOLO's train and val splits).
    """

    name: str
    width: int
    height: int
    labels: tuple[Box, ...] | None = None
    predictions: tuple[Box, ...] = ()
    path: Path | None = None
    """Where the image file is, for a dataset read from disk (None for one being exported)."""


@dataclass(frozen=True)
class Dataset:
    """Frames and the label names, in the task's order (class ids are positions in it)."""

    labels: tuple[str, ...]
    items: tuple[Item, ...]
    name: str = "labelloop"
    model_version: int | None = None
    """The model version that made ``predictions`` (exports with pre-annotations)."""
    skipped: tuple[tuple[str, str], ...] = field(default=())
    """``(frame, reason)`` of frames left out, so the export says what it does not hold."""

    def class_id(self, label: str, frame: str) -> int:
        """The label's position; an unknown label is refused rather than written as another."""
        try:
            return self.labels.index(label)
        except ValueError:
            raise DatasetError(
                f"{frame}: label {label!r} is not one of {list(self.labels)}"
            ) from None


class Sink:
    """Where a writer puts files: relative POSIX paths, each written once."""

    def put(self, path: str, data: bytes) -> None:
        raise NotImplementedError


ImageBytes = Callable[[Item], bytes | None]
"""The bytes of an item's image, read one at a time as a writer needs them; None leaves the
item out of the export (its reader says why, in the export's own record)."""


def with_images(items: Sequence[Item], image: ImageBytes) -> Iterator[tuple[Item, bytes]]:
    """Each item whose image could be read, with its bytes: what a writer writes."""
    for item in items:
        data = image(item)
        if data is not None:
            yield item, data


def check_unique(names: Sequence[str], where: str) -> None:
    """Frame names are file names in every format: two alike would overwrite each other."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DatasetError(f"{where}: two images are named {name!r}; frame names must differ")
        seen.add(name)


def image_size(path: Path) -> tuple[int, int]:
    """The displayed ``(width, height)`` of an image file, decoded as ingest decodes it: the
    size labelloop's boxes are drawn on once the frame is uploaded."""
    from labelloop.images import UnusableImage, decode_frame

    try:
        decoded = decode_frame(path.read_bytes())
    except UnusableImage as unusable:
        raise DatasetError(f"{path.name}: {unusable.reason}") from None
    return decoded.width, decoded.height
