"""Datasets in and out, in the formats the field uses: COCO, Ultralytics YOLO, CVAT for
images 1.1 and Pascal VOC. Each format is a module with ``write(dataset, sink, image)`` and
``read(root)``; both sides go through :class:`Dataset`, which names no service."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Literal

from labelloop.datasets import coco, cvat, voc, yolo
from labelloop.datasets.files import DirectorySink, ZipSink, extract_zip
from labelloop.datasets.records import (
    Box,
    Dataset,
    DatasetError,
    ImageBytes,
    Item,
    Sink,
    check_unique,
)

__all__ = [
    "FORMATS",
    "Box",
    "Dataset",
    "DatasetError",
    "DatasetFormat",
    "DirectorySink",
    "ImageBytes",
    "Item",
    "Sink",
    "ZipSink",
    "extract_zip",
    "read_dataset",
    "write_dataset",
]

DatasetFormat = Literal["coco", "yolo", "cvat", "voc"]
FORMATS: dict[str, ModuleType] = {module.FORMAT: module for module in (coco, yolo, cvat, voc)}


def write_dataset(fmt: DatasetFormat, dataset: Dataset, sink: Sink, image: ImageBytes) -> None:
    """``dataset`` in format ``fmt`` into ``sink``, each image read once as it is written."""
    check_unique([item.name for item in dataset.items], "the export")
    FORMATS[fmt].write(dataset, sink, image)


def read_dataset(fmt: DatasetFormat, root: Path) -> Dataset:
    """The dataset in format ``fmt`` under ``root``; a :class:`DatasetError` says what is wrong
    with it (a dataset is read whole and checked before anything is created from it)."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    dataset: Dataset = FORMATS[fmt].read(root)
    if not dataset.labels:
        raise DatasetError(f"{root}: the dataset names no label")
    if not dataset.items:
        raise DatasetError(f"{root}: the dataset holds no image")
    check_unique([item.name for item in dataset.items], str(root))
    return dataset
