"""Label Studio's shapes and labelloop's, translated: its label config, its tasks' frame names,
its rectangles in percent and labelloop's boxes in pixels. No I/O here.

A Label Studio task ``17`` becomes the frame ``ls-17<suffix>``, so the frame names the task it
came from and nothing but the name is needed to find one from the other (a replay included).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from defusedxml import ElementTree

from labelloop.datasets import Box, Item
from labelloop.images import IMAGE_SUFFIXES
from labelloop.importer import fit_boxes

FRAME_PREFIX = "ls-"
_FRAME = re.compile(r"^ls-([0-9]{1,18})(\.[A-Za-z0-9]{1,8})?$")
MAX_CONFIG_BYTES = 1024 * 1024
"""A label config is read no further than this (Label Studio's templates are a few KB)."""


class StudioError(ValueError):
    """What Label Studio sent cannot be taken, and why (answered to it as it is)."""


@dataclass(frozen=True)
class StudioConfig:
    """The part of a project's label config labelloop serves: one RectangleLabels on an Image."""

    from_name: str
    """The RectangleLabels' ``name`` (a result's ``from_name``)."""
    to_name: str
    """The Image's ``name`` (a result's ``to_name``)."""
    value_key: str
    """The task data field holding the image URL (``$image`` → ``image``)."""
    labels: tuple[str, ...]


def parse_label_config(xml: str) -> StudioConfig:
    """The first RectangleLabels that boxes an Image; labelloop detects boxes, nothing else."""
    if len(xml.encode()) > MAX_CONFIG_BYTES:
        raise StudioError(f"the label config is over {MAX_CONFIG_BYTES} bytes")
    try:
        root = ElementTree.fromstring(xml)
    except Exception as bad:  # defusedxml raises its own errors besides ParseError
        raise StudioError(f"the label config is not XML: {bad}") from bad
    images = {
        node.get("name"): node.get("value", "")
        for node in root.iter()
        if node.tag == "Image" and node.get("name")
    }
    for node in root.iter():
        if node.tag != "RectangleLabels":
            continue
        target = node.get("toName", "")
        if target not in images or not images[target].startswith("$"):
            continue
        labels = tuple(
            dict.fromkeys(
                label.get("value", "").strip()
                for label in node.iter()
                if label.tag == "Label" and label.get("value", "").strip()
            )
        )
        if not labels:
            raise StudioError(f"RectangleLabels {node.get('name')!r} names no Label")
        return StudioConfig(node.get("name", ""), target, images[target][1:], labels)
    raise StudioError(
        "the label config has no RectangleLabels on an Image with a $field value: labelloop "
        "serves object detection with boxes"
    )


def project_id(uid: object) -> int:
    """Label Studio's project id from what it sends: ``"12.1733131200"`` (id.created) or 12."""
    text = str(uid).split(".", 1)[0].strip()
    if not text.isdigit() or len(text) > 18:
        raise StudioError(f"not a Label Studio project id: {str(uid)[:40]!r}")
    return int(text)


def frame_name(task_id: int, url: str) -> str:
    """The frame a Label Studio task's image becomes: ``ls-<id>`` and the URL's image suffix."""
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower()
    return f"{FRAME_PREFIX}{task_id}{suffix if suffix in IMAGE_SUFFIXES else ''}"


def studio_task(frame: str) -> int | None:
    """The Label Studio task a frame came from; None for a frame that did not."""
    matched = _FRAME.match(frame)
    return int(matched.group(1)) if matched else None


def _rotated_extent(value: dict[str, Any]) -> tuple[float, float, float, float]:
    """The axis-aligned extent, in percent, of a rectangle Label Studio rotated about its
    top-left corner by ``rotation`` degrees (labelloop's boxes are axis-aligned)."""
    x, y = float(value["x"]), float(value["y"])
    w, h = float(value["width"]), float(value["height"])
    angle = math.radians(float(value.get("rotation") or 0.0))
    if not angle:
        return x, y, w, h
    cos, sin = math.cos(angle), math.sin(angle)
    xs = [x + dx * cos - dy * sin for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    ys = [y + dx * sin + dy * cos for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def boxes_from_results(
    results: list[dict[str, Any]], config: StudioConfig, frame: str, width: int, height: int
) -> list[dict[str, Any]]:
    """An annotation's rectangles as labelloop boxes in pixels of the frame, cut to it.

    Percent is of the image as displayed, which is the frame ingest decoded: the result's
    ``original_width`` is not trusted over the frame's own size. Results of other controls
    (a choice, a text area) are not boxes and are left out; a rectangle with a label the
    task does not have is refused, since dropping it would teach the model a false negative.
    """
    boxes: list[Box] = []
    for result in results:
        if result.get("type") != "rectanglelabels" or result.get("from_name") != config.from_name:
            continue
        value = result.get("value") or {}
        names = value.get("rectanglelabels") or []
        if len(names) != 1:
            raise StudioError(f"a rectangle on {frame} has {len(names)} labels; labelloop needs 1")
        if names[0] not in config.labels:
            raise StudioError(f"label {names[0]!r} on {frame} is not one of {list(config.labels)}")
        try:
            x, y, w, h = _rotated_extent(value)
        except (KeyError, TypeError, ValueError) as bad:
            raise StudioError(f"a rectangle on {frame} has no x, y, width, height") from bad
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            raise StudioError(f"a rectangle on {frame} is not finite")
        boxes.append(
            Box(names[0], x * width / 100, y * height / 100, w * width / 100, h * height / 100)
        )
    fitted, _, _ = fit_boxes(Item(frame, width, height, labels=tuple(boxes)))
    return fitted


def results_from_boxes(
    boxes: list[dict[str, Any]], config: StudioConfig, width: int, height: int
) -> list[dict[str, Any]]:
    """labelloop's scored boxes (pixels) as Label Studio prediction results (percent)."""
    return [
        {
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "rectanglelabels",
            "original_width": width,
            "original_height": height,
            "image_rotation": 0,
            "value": {
                "x": 100 * box["x"] / width,
                "y": 100 * box["y"] / height,
                "width": 100 * box["w"] / width,
                "height": 100 * box["h"] / height,
                "rotation": 0,
                "rectanglelabels": [box["label"]],
            },
            "score": box["score"],
        }
        for box in boxes
    ]


def prediction_score(boxes: list[dict[str, Any]], uncertainty: float | None) -> float:
    """A prediction's score, for Label Studio's sort by it: low where labeling the frame would
    teach the model most (1 - labelloop's uncertainty), else the boxes' mean confidence."""
    if uncertainty is not None:
        return max(0.0, min(1.0, 1.0 - uncertainty))
    return sum(box["score"] for box in boxes) / len(boxes) if boxes else 0.0


def model_version(version: int | None) -> str:
    """labelloop's model version as Label Studio shows it (``labelloop-v3``)."""
    return "labelloop-untrained" if version is None else f"labelloop-v{version}"


def annotator(annotation: dict[str, Any]) -> str:
    """Who made an annotation in Label Studio, as labelloop records the labels' author."""
    shown = str(annotation.get("created_username") or "").rsplit(",", 1)[0].split()
    who = shown[-1] if shown else f"user-{annotation.get('completed_by')}"
    return f"label-studio:{who}"[:128]
