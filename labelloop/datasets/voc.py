"""Pascal VOC detection: ``Annotations/<stem>.xml`` per frame, images under ``JPEGImages/``
(whatever their format), the frame list in ``ImageSets/Main/default.txt`` and the label names in
``labelmap.txt`` (Datumaro's and CVAT's way to carry classes other than VOC's twenty).

Pre-annotations are the VOC devkit's detection results: ``results/Main/comp4_det_default_
<label>.txt``, a line ``<frame> <score> <xmin> <ymin> <xmax> <ymax>`` per box.
"""

from __future__ import annotations

import glob
import re
import xml.etree.ElementTree as ET  # writing only; reading goes through defusedxml
from pathlib import Path

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

FORMAT = "voc"
SUBSET = "default"


def write(dataset: Dataset, sink: Sink, image: ImageBytes) -> None:
    """``dataset`` in the VOC layout; labeled frames get an annotation file each."""
    files = file_names([item.name for item in dataset.items])
    results: dict[str, list[str]] = {label: [] for label in dataset.labels}
    stems = []
    for item, data in with_images(dataset.items, image):
        stem = stem_of(files[item.name])
        stems.append(stem)
        sink.put(f"JPEGImages/{files[item.name]}", data)
        if item.labels is not None:
            sink.put(f"Annotations/{stem}.xml", _annotation(dataset, item, files[item.name]))
        for box in item.predictions:
            dataset.class_id(box.label, item.name)
            x0, y0, x1, y1 = box.corners
            results[box.label].append(
                f"{stem} {box.score or 0:.5f} {x0:.2f} {y0:.2f} {x1:.2f} {y1:.2f}"
            )
    sink.put(f"ImageSets/Main/{SUBSET}.txt", "".join(s + "\n" for s in stems).encode())
    labelmap = "# label:color_rgb:parts:actions\n" + "".join(
        f"{_labelmap_name(label)}:::\n" for label in dataset.labels
    )
    sink.put("labelmap.txt", labelmap.encode())
    for index, (label, lines) in enumerate(results.items()):
        if lines:
            file = f"comp4_det_{SUBSET}_{_file_part(label)}-{index}.txt"
            sink.put(f"results/Main/{file}", "".join(line + "\n" for line in lines).encode())


def _annotation(dataset: Dataset, item: Item, file_name: str) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, count in (("width", item.width), ("height", item.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(count)
    ET.SubElement(root, "segmented").text = "0"
    for box in item.labels or ():
        dataset.class_id(box.label, item.name)
        element = ET.SubElement(root, "object")
        ET.SubElement(element, "name").text = box.label
        ET.SubElement(element, "pose").text = "Unspecified"
        for key in ("truncated", "difficult", "occluded"):
            ET.SubElement(element, key).text = "0"
        bndbox = ET.SubElement(element, "bndbox")
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box.corners, strict=True):
            ET.SubElement(bndbox, key).text = f"{value:.2f}"
    ET.indent(root)
    written: bytes = ET.tostring(root, encoding="utf-8")
    return written


def _labelmap_name(label: str) -> str:
    if ":" in label:
        raise DatasetError(f"label {label!r}: Pascal VOC's labelmap.txt cannot hold a ':'")
    return label


def _file_part(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", label)[:40]


def read(root: Path) -> Dataset:
    """The frames ``ImageSets/Main/*.txt`` list (else every annotation file), their labels
    from ``Annotations/``; the classes from ``labelmap.txt`` when there is one."""
    from defusedxml import ElementTree as SafeET

    annotations = root / "Annotations"
    if not annotations.is_dir():
        raise DatasetError(f"{root} has no Annotations/: not a Pascal VOC dataset")
    labels = _read_labelmap(root / "labelmap.txt")
    stems = _listed_stems(root) or sorted(path.stem for path in annotations.glob("*.xml"))
    items = []
    for stem in stems:
        path = annotations / f"{stem}.xml"
        if not path.resolve().is_relative_to(annotations.resolve()):
            raise DatasetError(f"frame {stem!r} lies outside the dataset")
        boxes: list[Box] = []
        file_name = None
        if path.is_file():
            try:
                document = SafeET.parse(path).getroot()
            except ET.ParseError as error:
                raise DatasetError(f"{path} is not XML: {error}") from None
            file_name = document.findtext("filename")
            for element in document.iterfind("object"):
                label = (element.findtext("name") or "").strip()
                if label not in labels:
                    labels.append(label)
                try:
                    x0, y0, x1, y1 = (
                        float(element.findtext(f"bndbox/{key}") or "")
                        for key in ("xmin", "ymin", "xmax", "ymax")
                    )
                except ValueError:
                    raise DatasetError(f"{path}: an object has no bndbox") from None
                boxes.append(Box(label, x0, y0, x1 - x0, y1 - y0))
        image = _image_path(root, stem, file_name)
        width, height = image_size(image)
        items.append(Item(image.name, width, height, tuple(boxes), path=image))
    return Dataset(labels=tuple(labels), items=tuple(items), name=root.name)


def _read_labelmap(path: Path) -> list[str]:
    if not path.is_file():
        return []
    names = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.append(line.split(":", 1)[0].strip())
    return [name for name in names if name != "background"]


def _listed_stems(root: Path) -> list[str]:
    """The frames of the subset lists; a class's list (``<class>_<subset>.txt``, two fields a
    line) names the same frames again and is skipped."""
    stems: dict[str, None] = {}  # ordered, each once
    for listing in sorted((root / "ImageSets" / "Main").glob("*.txt")):
        lines = [line.split() for line in listing.read_text().splitlines() if line.strip()]
        if any(len(fields) != 1 for fields in lines):
            continue
        stems.update((fields[0], None) for fields in lines)
    return list(stems)


def _image_path(root: Path, stem: str, file_name: str | None) -> Path:
    images = root / "JPEGImages"
    if file_name and (images / file_name).is_file():
        path = images / file_name
    else:
        found = sorted(images.glob(f"{glob.escape(stem)}.*"))
        if not found:
            raise DatasetError(f"frame {stem!r} has no image under JPEGImages/")
        path = found[0]
    if not path.resolve().is_relative_to(images.resolve()):
        raise DatasetError(f"image {file_name!r} lies outside the dataset")
    return path
