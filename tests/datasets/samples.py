"""One small dataset with every case the exporters must tell apart: labeled frames, a frame
labeled empty, a frame only pre-annotated, names that are not plain file names, and two frames
whose names share a stem."""

from __future__ import annotations

import io

from PIL import Image

from labelloop.datasets import Box, Dataset, Item

LABELS = ("car", "person", "traffic light")
SIZES = {
    "a.jpg": (64, 48),
    "a.png": (40, 30),
    "frame 7 (ü).png": (50, 40),
    "b.jpg": (64, 48),
    "empty.png": (32, 32),
    "unlabeled.jpg": (48, 36),
}


def image_bytes(name: str) -> bytes:
    width, height = SIZES[name]
    image = Image.new("RGB", (width, height), (20 + len(name), 90, 160))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG" if name.endswith(".jpg") else "PNG")
    return buffer.getvalue()


def sample_dataset() -> Dataset:
    def item(name: str, labels: tuple[Box, ...] | None, predictions: tuple[Box, ...] = ()) -> Item:
        width, height = SIZES[name]
        return Item(name, width, height, labels, predictions)

    return Dataset(
        labels=LABELS,
        name="sample",
        model_version=3,
        items=(
            item(
                "a.jpg",
                (Box("car", 4, 6, 20, 10), Box("traffic light", 30.5, 2.25, 8, 16)),
                (Box("car", 5, 6, 19, 11, 0.91),),
            ),
            item("a.png", (Box("person", 0, 0, 40, 30),)),
            item("frame 7 (ü).png", (Box("person", 10, 12, 5, 9), Box("car", 1, 1, 3, 3))),
            item("b.jpg", (Box("traffic light", 60, 40, 4, 8),)),
            item("empty.png", ()),
            item("unlabeled.jpg", None, (Box("person", 3, 4, 10, 20, 0.42),)),
        ),
    )
