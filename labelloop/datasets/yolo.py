"""The Ultralytics YOLO layout: ``data.yaml``, ``images/<split>/`` and ``labels/<split>/`` with
one ``class cx cy w h`` line per box, normalised to the image's size.

The trainer writes its runs' datasets with the same lines (:func:`yolo_lines`) and the same
split rule (:func:`split_draw`), so an exported dataset trains as labelloop's own runs do.
Only labeled frames are training data (Ultralytics reads an image without boxes as background);
frames exported only for their pre-annotations go under ``images/unlabeled/``. Pre-annotations
are Ultralytics' own prediction files (``save_txt`` with ``save_conf``): ``predictions/<split>/``
with the confidence as a sixth column.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from labelloop.datasets.files import file_names, stem_of
from labelloop.datasets.records import (
    Box,
    Dataset,
    DatasetError,
    ImageBytes,
    Item,
    Sink,
    image_size,
    with_images,
)
from labelloop.images import IMAGE_SUFFIXES

FORMAT = "yolo"
VAL_FRACTION = 0.2
"""Labeled frames in the val split, chosen by name (:func:`split_draw`)."""
UNLABELED = "unlabeled"


def split_draw(name: str, seed: int = 0) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the name alone: a frame's split never
    changes as its task grows, so no val frame leaks into a later train."""
    value = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(value[:8], "big") / 2**64


def val_split(names: Sequence[str], val_fraction: float, seed: int = 0) -> set[str]:
    """The names of the val frames: at least one, and never every frame (with two or more)."""
    draws = {name: split_draw(name, seed) for name in names}
    val = {name for name, draw in draws.items() if draw < val_fraction}
    if not val and draws:
        val = {min(draws, key=draws.__getitem__)}
    if len(val) == len(draws) and len(draws) > 1:
        val.remove(max(draws, key=draws.__getitem__))
    return val


def yolo_lines(
    boxes: Iterable[tuple[int, float, float, float, float]],
    width: int,
    height: int,
    scores: Iterable[float | None] | None = None,
) -> list[str]:
    """``class cx cy w h [conf]`` normalised; boxes are clipped to the image (Ultralytics drops
    a whole image with a coordinate outside [0, 1]) and a box wholly outside it is left out."""
    lines = []
    for (class_id, x, y, w, h), score in zip(boxes, scores or itertools.repeat(None), strict=False):
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(width)), min(y + h, float(height))
        if x1 <= x0 or y1 <= y0:
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        nw, nh = (x1 - x0) / width, (y1 - y0) / height
        line = f"{class_id} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}"
        lines.append(line if score is None else f"{line} {score:.5f}")
    return lines


def data_yaml(root: str | None, labels: Sequence[str], *, train: str, val: str) -> bytes:
    """What Ultralytics reads; JSON is YAML, so no YAML library is needed to write it. Without
    ``root`` Ultralytics takes data.yaml's own folder (a relative ``path`` would be the cwd's)."""
    document: dict[str, Any] = {"train": train, "val": val, "names": dict(enumerate(labels))}
    if root is not None:
        document = {"path": root, **document}
    return json.dumps(document, indent=2).encode()


def write(dataset: Dataset, sink: Sink, image: ImageBytes) -> None:
    """``dataset`` in the Ultralytics layout under ``sink``."""
    files = file_names([item.name for item in dataset.items])
    labeled = [item.name for item in dataset.items if item.labels is not None]
    val = val_split(labeled, VAL_FRACTION)
    for item, data in with_images(dataset.items, image):
        split = UNLABELED if item.labels is None else "val" if item.name in val else "train"
        stem = stem_of(files[item.name])
        sink.put(f"images/{split}/{files[item.name]}", data)
        if item.labels is not None:
            sink.put(f"labels/{split}/{stem}.txt", _text(dataset, item, item.labels))
        if item.predictions:
            sink.put(f"predictions/{split}/{stem}.txt", _text(dataset, item, item.predictions))
    # no ``path``: Ultralytics reads the splits beside data.yaml, wherever the export is unpacked
    sink.put("data.yaml", data_yaml(None, dataset.labels, train="images/train", val="images/val"))


def _text(dataset: Dataset, item: Item, boxes: Sequence[Box]) -> bytes:
    lines = yolo_lines(
        ((dataset.class_id(b.label, item.name), b.x, b.y, b.w, b.h) for b in boxes),
        item.width,
        item.height,
        [box.score for box in boxes],
    )
    return "".join(line + "\n" for line in lines).encode()


def read(root: Path) -> Dataset:
    """A dataset in the Ultralytics layout: every split ``data.yaml`` names, each image's label
    file beside it under ``labels/`` (no file: a frame without objects)."""
    config = _read_yaml(root / "data.yaml")
    labels = _names(config.get("names"), root / "data.yaml")
    base = root / str(config.get("path") or ".")
    if not base.is_dir():
        base = root  # a ``path`` from the machine that wrote it: the export's own folder
    items: list[Item] = []
    for split in ("train", "val", "test"):
        for folder in _split_folders(config.get(split), base):
            for path in sorted(folder.rglob("*")):
                if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                    continue
                width, height = image_size(path)
                text = _label_file(path)
                boxes = _boxes(text, labels, width, height, path) if text is not None else ()
                items.append(Item(path.name, width, height, tuple(boxes), path=path))
    return Dataset(labels=tuple(labels), items=tuple(items), name=root.name)


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise DatasetError(f"{path} is missing: a YOLO dataset names its classes there")
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DatasetError(f"{path} is not YAML: {error}") from None
    if not isinstance(document, dict):
        raise DatasetError(f"{path} holds no mapping of settings")
    return document


def _names(names: Any, where: Path) -> list[str]:
    if isinstance(names, dict):
        try:
            order = sorted(names, key=int)
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: `names` keys must be class ids") from None
        if [int(key) for key in order] != list(range(len(order))):
            raise DatasetError(f"{where}: class ids in `names` must run 0, 1, 2, …")
        return [str(names[key]) for key in order]
    if isinstance(names, list) and names:
        return [str(name) for name in names]
    raise DatasetError(f"{where}: `names` must list the classes")


def _split_folders(entry: Any, base: Path) -> list[Path]:
    if entry is None:
        return []
    entries = entry if isinstance(entry, list) else [entry]
    folders = []
    for value in entries:
        folder = (base / str(value)).resolve()
        if not folder.is_relative_to(base.resolve()):
            raise DatasetError(f"split folder {value!r} lies outside the dataset")
        if folder.suffix == ".txt":
            raise DatasetError(f"{value}: image lists are not read; name image folders")
        if folder.is_dir():
            folders.append(folder)
    return folders


def _label_file(image: Path) -> str | None:
    """Ultralytics' rule: the last ``images`` folder of the path becomes ``labels``."""
    parts = list(image.with_suffix(".txt").parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            label = Path(*parts)
            return label.read_text() if label.is_file() else None
    return None


def _boxes(text: str, labels: list[str], width: int, height: int, image: Path) -> list[Box]:
    boxes = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (5, 6):
            raise DatasetError(f"{image.name} line {number}: want `class cx cy w h`")
        try:
            class_id = int(fields[0])
            cx, cy, w, h = (float(value) for value in fields[1:5])
        except ValueError:
            raise DatasetError(f"{image.name} line {number}: not numbers") from None
        if not 0 <= class_id < len(labels):
            raise DatasetError(f"{image.name} line {number}: no class {class_id}")
        x = max((cx - w / 2) * width, 0.0)
        y = max((cy - h / 2) * height, 0.0)
        boxes.append(Box(labels[class_id], x, y, w * width, h * height))
    return boxes
