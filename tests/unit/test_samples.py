"""The bundled model-loop samples are what ``labelloop.synthetic`` makes, labels included."""

from __future__ import annotations

import json

from PIL import Image

from labelloop.demo import LOOP_LABELS, LOOP_SAMPLES
from labelloop.synthetic import DEFAULT_SIZE, synthetic_frame


def test_bundled_labels_are_the_frames_ground_truth() -> None:
    labels = json.loads(LOOP_LABELS.read_text())
    frames = sorted(path.name for path in LOOP_SAMPLES.glob("*.jpg"))
    assert frames == sorted(labels) and len(frames) == 52
    for name, boxes in labels.items():
        seed = int(name.removeprefix("loop_").removesuffix(".jpg"))
        _, truth = synthetic_frame(seed)
        assert boxes == [{"label": b.label, "x": b.x, "y": b.y, "w": b.w, "h": b.h} for b in truth]
        with Image.open(LOOP_SAMPLES / name) as image:
            assert image.size == DEFAULT_SIZE and image.format == "JPEG"
