"""CVAT for images 1.1: ``annotations.xml`` and the images under ``images/``.

Labels are ``<box source="manual">``; pre-annotations are ``<box source="auto">`` with their
confidence as the box's ``score`` attribute (declared on each label), which is how CVAT itself
tells a model's shapes from a person's.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # writing only; reading goes through defusedxml
from pathlib import Path

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

FORMAT = "cvat"
SCORE = "score"


def write(dataset: Dataset, sink: Sink, image: ImageBytes) -> None:
    """``dataset`` as a CVAT for images 1.1 export."""
    files = file_names([item.name for item in dataset.items])
    scored = any(item.predictions for item in dataset.items)
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = dataset.name
    size = ET.SubElement(task, "size")
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for name in dataset.labels:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = name
        ET.SubElement(label, "type").text = "rectangle"
        attributes = ET.SubElement(label, "attributes")
        if scored:
            attribute = ET.SubElement(attributes, "attribute")
            for key, text in (
                ("name", SCORE),
                ("mutable", "False"),
                ("input_type", "number"),
                ("default_value", "0"),
                ("values", "0;1;0.00001"),
            ):
                ET.SubElement(attribute, key).text = text
    count = 0
    for image_id, (item, data) in enumerate(with_images(dataset.items, image)):
        sink.put(f"images/{files[item.name]}", data)
        count += 1
        element = ET.SubElement(
            root,
            "image",
            id=str(image_id),
            name=files[item.name],
            width=str(item.width),
            height=str(item.height),
        )
        for box in item.labels or ():
            _box(element, dataset, item, box, "manual")
        for box in item.predictions:
            _box(element, dataset, item, box, "auto")
    size.text = str(count)
    ET.indent(root)
    sink.put("annotations.xml", ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _box(parent: ET.Element, dataset: Dataset, item: Item, box: Box, source: str) -> None:
    dataset.class_id(box.label, item.name)  # an unknown label is refused, not written
    x0, y0, x1, y1 = box.corners
    element = ET.SubElement(
        parent,
        "box",
        label=box.label,
        source=source,
        occluded="0",
        xtl=f"{x0:.2f}",
        ytl=f"{y0:.2f}",
        xbr=f"{x1:.2f}",
        ybr=f"{y1:.2f}",
        z_order="0",
    )
    if box.score is not None:
        ET.SubElement(element, "attribute", name=SCORE).text = f"{box.score:.5f}"


def read(root: Path) -> Dataset:
    """``annotations.xml``'s labels and images (looked for under ``images/``); boxes a model
    made (``source="auto"``) are not a person's labels and are left out."""
    from defusedxml import ElementTree as SafeET

    path = root / "annotations.xml"
    if not path.is_file():
        raise DatasetError(f"{path} is missing: not a CVAT for images export")
    try:
        document = SafeET.parse(path).getroot()
    except ET.ParseError as error:
        raise DatasetError(f"{path} is not XML: {error}") from None
    labels = [
        (label.findtext("name") or "").strip() for label in document.iterfind("meta/*/labels/label")
    ]
    items = []
    for element in document.iterfind("image"):
        name = element.get("name") or ""
        file = _image_path(root, name)
        width, height = image_size(file)
        boxes = []
        for box in element.iterfind("box"):
            if box.get("source") == "auto":
                continue
            label = box.get("label") or ""
            if label not in labels:
                labels.append(label)
            try:
                x0, y0, x1, y1 = (float(box.get(key) or "") for key in ("xtl", "ytl", "xbr", "ybr"))
            except ValueError:
                raise DatasetError(f"{path}: a box of {name} has no corners") from None
            boxes.append(Box(label, x0, y0, x1 - x0, y1 - y0))
        items.append(Item(file.name, width, height, tuple(boxes), path=file))
    return Dataset(
        labels=tuple(label for label in labels if label), items=tuple(items), name=root.name
    )


def _image_path(root: Path, name: str) -> Path:
    images = (root / "images").resolve()
    path = (images / name).resolve()
    if not path.is_relative_to(images):
        raise DatasetError(f"image {name!r} lies outside the dataset")
    if not path.is_file():
        raise DatasetError(f"image {name!r} is in annotations.xml but not under images/")
    return path
