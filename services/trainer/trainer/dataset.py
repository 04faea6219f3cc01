"""A run's YOLO dataset on disk, written from labeled frames, free of service I/O.

Each frame is decoded as serving decodes it and written in its displayed orientation; its
split (train or val) depends on its name alone, so it never changes as the task grows.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labelloop.datasets.yolo import data_yaml, val_split, yolo_lines
from labelloop.images import DecodedFrame, UnusableImage, decode_frame

BoxTuple = tuple[str, float, float, float, float]
"""``(label, x, y, w, h)`` in pixels, ``x``/``y`` the top-left corner (the API's shape)."""

DATASET_SUFFIX = ".png"
"""A frame is written as 8-bit RGB PNG in its displayed orientation (labelloop.images), so
Ultralytics never sees the original format or its EXIF: what trains is what serving decodes.
An 8-bit RGB JPEG or PNG without rotation or transparency is already that and keeps its bytes
(:data:`STORED_SUFFIXES`)."""
STORED_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png"}
IMAGE_SUFFIXES = frozenset({DATASET_SUFFIX, *STORED_SUFFIXES.values()})


@dataclass(frozen=True)
class LabeledFrame:
    """One labelled image as the trainer receives it."""

    name: str
    image: bytes
    """The frame's bytes as ingest validated them (any format ingest accepts)."""
    width: int
    height: int
    """The displayed size ingest recorded, which the boxes are in."""
    boxes: Sequence[BoxTuple]


@dataclass(frozen=True)
class DatasetInfo:
    """A YOLO dataset on disk; ``dataset_hash`` identifies its content in run.json."""

    root: Path
    data_yaml: Path
    labels: tuple[str, ...]
    train_count: int
    val_count: int
    dataset_hash: str
    skipped: tuple[tuple[str, str], ...] = ()
    """``(frame, reason)`` of each labeled frame left out, so run.json says what did not train."""
    train_frames: tuple[str, ...] = ()
    """The names of the train split, sorted: the registry keeps them (``trained.json``) so the
    labels of every other frame can be checked by this model out of sample."""


def write_dataset(
    root: Path,
    items: list[LabeledFrame],
    labels: list[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    skipped: Sequence[tuple[str, str]] = (),
) -> DatasetInfo:
    """Write ``items`` as a YOLO dataset under the empty folder ``root``.

    Each image is decoded as serving decodes it (:func:`labelloop.images.decode_frame`) and
    written as RGB PNG; a frame that does not decode to the size its boxes were drawn on is
    left out and listed in ``skipped`` with its reason, after those the caller passes in.
    A frame goes to val when a hash of ``seed`` and its name falls under ``val_fraction``: the
    split of a frame never changes as the task grows, so no val frame leaks into a later train.
    """
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must lie strictly between 0 and 1")
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("frame names must be unique")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; stale files would join the dataset")
    left_out = list(skipped)
    staging = root / "decoded"  # one decoded frame in memory at a time, each written once
    items, staged = _stage(items, staging, left_out)
    if len(items) < 2:
        why = "; ".join(f"{name}: {reason}" for name, reason in left_out)
        raise ValueError(
            "a dataset needs at least 2 frames (one to train on, one to validate)"
            + (f"; left out: {why}" if why else "")
        )
    val = val_split([item.name for item in items], val_fraction, seed)
    digest = _write_splits(root, items, staged, val, labels)
    shutil.rmtree(staging)
    root = root.resolve()
    return DatasetInfo(
        root=root,
        data_yaml=_write_data_yaml(root, labels),
        labels=tuple(labels),
        train_count=len(items) - len(val),
        val_count=len(val),
        dataset_hash=digest,
        skipped=tuple(left_out),
        train_frames=tuple(sorted(item.name for item in items if item.name not in val)),
    )


def _stage(
    items: list[LabeledFrame], staging: Path, left_out: list[tuple[str, str]]
) -> tuple[list[LabeledFrame], dict[str, Path]]:
    """Decode each frame and write its image under ``staging``; the usable frames, and where
    each one's image is. A frame that cannot train is appended to ``left_out`` with why."""
    staging.mkdir(parents=True, exist_ok=True)
    usable = []
    staged: dict[str, Path] = {}
    for item in items:
        decoded = _decode(item)
        if isinstance(decoded, str):
            left_out.append((item.name, decoded))
            continue
        stem = _file_stem(item.name)
        if decoded.as_stored:
            staged[item.name] = staging / (stem + STORED_SUFFIXES[decoded.format])
            staged[item.name].write_bytes(item.image)
        else:  # compress_level 1: several times faster than the default, and still lossless
            staged[item.name] = staging / (stem + DATASET_SUFFIX)
            decoded.image.save(staged[item.name], compress_level=1)
        usable.append(item)
    return usable, staged


def _write_splits(
    root: Path,
    items: list[LabeledFrame],
    staged: dict[str, Path],
    val: set[str],
    labels: list[str],
) -> str:
    """Move each staged image into its split and write its label file; the dataset's hash."""
    digest = hashlib.sha256(json.dumps(labels).encode())
    for item in sorted(items, key=lambda frame: frame.name):
        split = "val" if item.name in val else "train"
        lines = _yolo_lines(item, labels)
        stem = _file_stem(item.name)
        label_text = "".join(line + "\n" for line in lines).encode()
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        staged[item.name].replace(root / "images" / split / staged[item.name].name)
        (root / "labels" / split / (stem + ".txt")).write_bytes(label_text)
        record = [item.name, split, hashlib.sha256(item.image).hexdigest(), lines]
        digest.update(json.dumps(record).encode())
    return digest.hexdigest()


def _write_data_yaml(root: Path, labels: list[str]) -> Path:
    path = root / "data.yaml"
    path.write_bytes(data_yaml(str(root), labels, train="images/train", val="images/val"))
    return path


def _file_stem(name: str) -> str:
    """A safe, readable file name; the hash keeps names that sanitise alike apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def _decode(item: LabeledFrame) -> DecodedFrame | str:
    """The frame's displayed RGB pixels, or why it cannot train: labels are only right for the
    size they were drawn on (a frame ingested before EXIF orientation was applied may differ)."""
    try:
        decoded = decode_frame(item.image)
    except UnusableImage as unusable:
        return f"{unusable.code}: {unusable.reason}"
    if decoded.image.size != (item.width, item.height):
        return (
            f"decodes to {decoded.width}x{decoded.height}, but its labels were drawn on "
            f"{item.width}x{item.height} (as declared)"
        )
    return decoded


def _yolo_lines(item: LabeledFrame, labels: list[str]) -> list[str]:
    for label, *_ in item.boxes:
        if label not in labels:
            raise ValueError(f"{item.name}: label {label!r} is not in {labels}")
    boxes = ((labels.index(label), x, y, w, h) for label, x, y, w, h in item.boxes)
    return yolo_lines(boxes, item.width, item.height)
