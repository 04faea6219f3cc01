"""COCO: ``annotations/instances_default.json`` (images, categories and the labels as
``[x, y, w, h]`` boxes) and the images under ``images/default/``.

Pre-annotations are COCO's detection results (``results/detections_default.json``: a list
of ``{image_id, category_id, bbox, score}``), which ``pycocotools``' ``loadRes`` and
``COCOeval`` read against the instances file. Category ids start at 1, as COCO's do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelloop.datasets.files import file_names
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

FORMAT = "coco"
SUBSET = "default"


def write(dataset: Dataset, sink: Sink, image: ImageBytes) -> None:
    """``dataset`` as COCO instances (labels) and detection results (pre-annotations)."""
    files = file_names([item.name for item in dataset.items])
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for image_id, (item, data) in enumerate(with_images(dataset.items, image), 1):
        sink.put(f"images/{SUBSET}/{files[item.name]}", data)
        images.append(
            {
                "id": image_id,
                "file_name": files[item.name],
                "width": item.width,
                "height": item.height,
            }
        )
        for box in item.labels or ():
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": dataset.class_id(box.label, item.name) + 1,
                    "bbox": [box.x, box.y, box.w, box.h],
                    "area": box.w * box.h,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
        for box in item.predictions:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": dataset.class_id(box.label, item.name) + 1,
                    "bbox": [box.x, box.y, box.w, box.h],
                    "score": box.score,
                }
            )
    instances = {
        "info": {"description": dataset.name, "version": "1.0"},
        "licenses": [],
        "categories": [
            {"id": index + 1, "name": label, "supercategory": ""}
            for index, label in enumerate(dataset.labels)
        ],
        "images": images,
        "annotations": annotations,
    }
    sink.put(f"annotations/instances_{SUBSET}.json", json.dumps(instances).encode())
    if results:
        sink.put(f"results/detections_{SUBSET}.json", json.dumps(results).encode())


def read(root: Path) -> Dataset:
    """Every ``annotations/instances_*.json`` under ``root``; an image is looked for under
    ``images/<subset>/`` and then ``images/``. Crowd regions are not boxes and are left out."""
    found = sorted((root / "annotations").glob("instances_*.json"))
    if not found:
        raise DatasetError(f"{root}/annotations has no instances_*.json: not a COCO dataset")
    labels: list[str] = []
    items: list[Item] = []
    for path in found:
        subset = path.stem.removeprefix("instances_")
        document = _load(path)
        names = {int(c["id"]): str(c["name"]) for c in _list(document, "categories", path)}
        for category_id in sorted(names):
            if names[category_id] not in labels:
                labels.append(names[category_id])
        boxes: dict[int, list[Box]] = {}
        for annotation in _list(document, "annotations", path):
            if annotation.get("iscrowd"):
                continue
            x, y, w, h = (float(value) for value in annotation["bbox"])
            label = names.get(int(annotation["category_id"]))
            if label is None:
                raise DatasetError(f"{path}: annotation {annotation.get('id')} has no category")
            boxes.setdefault(int(annotation["image_id"]), []).append(Box(label, x, y, w, h))
        for entry in _list(document, "images", path):
            file = _image_path(root, subset, str(entry["file_name"]))
            width, height = image_size(file)
            items.append(
                Item(file.name, width, height, tuple(boxes.get(int(entry["id"]), ())), path=file)
            )
    return Dataset(labels=tuple(labels), items=tuple(items), name=root.name)


def _load(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise DatasetError(f"{path} is not a COCO instances document")
    return document


def _list(document: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    value = document.get(key, [])
    if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
        raise DatasetError(f"{path}: `{key}` must be a list of objects")
    return value


def _image_path(root: Path, subset: str, file_name: str) -> Path:
    images = (root / "images").resolve()
    for folder in (images / subset, images):
        path = (folder / file_name).resolve()
        if not path.is_relative_to(images):
            raise DatasetError(f"image {file_name!r} lies outside the dataset")
        if path.is_file():
            return path
    raise DatasetError(f"image {file_name!r} is in the annotations but not under images/")
