"""Synthetic detection frames: bright boxes on dark noise, with their ground-truth boxes.

The demo's model-in-the-loop run, the tests and the benchmarks make their frames here; nothing
is downloaded. A detector learns these in under a minute on CPU (the README's Figures,
``retrain``: 40 labeled frames, 30 epochs at 192 px, 31.7 s on 2 cores).
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from labelloop.datasets import Box

DEFAULT_SIZE = (192, 144)
LABEL = "box"


def annotations_body(frames: Iterable[str], truth: dict[str, list[Box]]) -> dict[str, Any]:
    """``PUT /api/jobs/{id}/annotations``'s body labeling ``frames`` with their ground truth."""
    return {
        "frames": [
            {"frame": name, "boxes": [box.api_shape() for box in truth[name]]} for name in frames
        ]
    }


COLOURS = {LABEL: (240, 130, 20), "tag": (20, 200, 230)}
"""Each class's colour; a frame may draw boxes of several (``labels``)."""
HARD_DIMMING = 0.3
"""A hard frame's boxes keep this share of their colour over the noise, and are small."""


def synthetic_frame(
    seed: int,
    size: tuple[int, int] = DEFAULT_SIZE,
    max_boxes: int = 3,
    *,
    hard: bool = False,
    labels: tuple[str, ...] = (LABEL,),
) -> tuple[Image.Image, list[Box]]:
    """One frame and its boxes; the same seed always gives the same frame.

    ``hard``: small boxes, dim against the noise (what a young model misses). ``labels``: the
    classes drawn, each in its colour (:data:`COLOURS`).
    """
    rng = random.Random(seed)
    width, height = size
    noise = bytes(rng.randrange(0, 48) for _ in range(width * height))
    image = Image.merge("RGB", [Image.frombytes("L", size, noise)] * 3)
    draw = ImageDraw.Draw(image)
    boxes: list[Box] = []
    smallest, largest = (14, 8) if hard else (8, 3)
    for _ in range(rng.randint(1, max_boxes)):
        w = rng.randint(width // smallest, width // largest)
        h = rng.randint(height // smallest, height // largest)
        for _attempt in range(20):  # keep boxes apart so ground truth is unambiguous
            x, y = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
            if all(x + w < b.x or b.x + b.w < x or y + h < b.y or b.y + b.h < y for b in boxes):
                break
        else:
            continue
        label = labels[0] if len(labels) == 1 else rng.choice(labels)
        red, green, blue = COLOURS[label]
        green += rng.randint(0, 40)
        if hard:
            red, green, blue = (int(24 + (c - 24) * HARD_DIMMING) for c in (red, green, blue))
        draw.rectangle([x, y, x + w - 1, y + h - 1], fill=(red, green, blue))
        boxes.append(Box(label, float(x), float(y), float(w), float(h)))
    return image, boxes


def write_synthetic_frames(
    folder: Path, seeds: Iterable[int], prefix: str = "frame"
) -> dict[str, list[Box]]:
    """JPEG files ``<prefix>_<seed>.jpg`` in ``folder``; returns each file's ground truth."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for seed in seeds:
        image, boxes = synthetic_frame(seed)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        name = f"{prefix}_{seed:03d}.jpg"
        (folder / name).write_bytes(buffer.getvalue())
        truth[name] = boxes
    return truth
