"""yolo_codec against Ultralytics' own letterbox, NMS and box scaling, on random inputs.

No trained model is needed: the reference functions are called directly.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from labeler_assist import yolo_codec
from labelloop.config import Settings
from tests.serving.conftest import ultralytics_yolo


@pytest.fixture(scope="module", autouse=True)
def _offline_ultralytics() -> None:
    ultralytics_yolo()  # sets the offline environment before any ultralytics import


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Noise upsampled from a coarse grid: photo-like gradients, not only sharp edges."""
    coarse = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3)).astype(np.float32)
    rows = np.linspace(0, coarse.shape[0] - 1, height).round().astype(int)
    cols = np.linspace(0, coarse.shape[1] - 1, width).round().astype(int)
    noise = rng.integers(-20, 21, (height, width, 3))
    image: np.ndarray = np.clip(coarse[rows][:, cols] + noise, 0, 255).astype(np.uint8)
    return image


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [
        (144, 192, 192),  # padding only
        (144, 192, 640),  # upscaled, padded top and bottom
        (1080, 1920, 640),  # downscaled
        (333, 517, 640),  # odd sides: per-axis gains differ after rounding
        (1000, 37, 192),  # tall and thin: padded left and right
        (50, 3000, 640),
        (640, 640, 640),  # nothing to do
    ],
)
def test_letterbox_matches_ultralytics(height: int, width: int, size: int) -> None:
    from ultralytics.data.augment import LetterBox

    image = _smooth_image(np.random.default_rng(height * width), height, width)
    ours, box = yolo_codec.letterbox(image, size)
    reference: np.ndarray = LetterBox(size, auto=False)(image=image)  # type: ignore[assignment]

    assert ours.shape == reference.shape == (size, size, 3)
    difference = np.abs(ours.astype(int) - reference.astype(int))
    # OpenCV's SIMD rounding differs by one grey level on a few pixels (see yolo_codec).
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.005
    padding = np.all(reference == 114, axis=2)
    assert padding[: box.pad_y].all() and padding[:, : box.pad_x].all()


def test_decode_matches_ultralytics_nms() -> None:
    import torch
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(7)
    for _ in range(12):
        batch, classes, anchors = 2, int(rng.integers(1, 5)), int(rng.integers(50, 4000))
        raw = np.zeros((batch, 4 + classes, anchors), dtype=np.float32)
        # Anchors clustered around a few objects, as a detector's output is: NMS has work.
        centers = rng.uniform(0, 640, (batch, 2, 10))
        which = rng.integers(0, 10, (batch, anchors))
        for axis in (0, 1):
            raw[:, axis] = np.take_along_axis(centers[:, axis], which, 1)
            raw[:, axis] += rng.normal(0, 8, (batch, anchors))
        raw[:, 2:4] = rng.uniform(10, 200, (batch, 2, anchors))
        raw[:, 4:] = rng.uniform(0, 1, (batch, classes, anchors)) ** 6
        conf, iou = float(rng.uniform(0.05, 0.6)), float(rng.uniform(0.3, 0.8))
        max_det = int(rng.integers(5, 300))

        ours = yolo_codec.decode(raw, conf, iou, max_det)
        reference = non_max_suppression(torch.from_numpy(raw), conf, iou, max_det=max_det)

        for mine, theirs in zip(ours, reference, strict=True):
            np.testing.assert_allclose(mine, theirs.numpy(), atol=1e-4)


def test_decode_with_nothing_above_the_threshold() -> None:
    raw = np.zeros((1, 6, 100), dtype=np.float32)
    raw[0, 4] = 0.25  # equal to conf: Ultralytics keeps only scores above it
    (rows,) = yolo_codec.decode(raw, 0.25, 0.7, 300)
    assert rows.shape == (0, 6)


@pytest.mark.parametrize(("height", "width"), [(144, 192), (333, 517), (1000, 37)])
def test_unletterbox_matches_scale_boxes(height: int, width: int) -> None:
    from ultralytics.utils.ops import clip_boxes, scale_boxes

    _, box = yolo_codec.letterbox(np.zeros((height, width, 3), dtype=np.uint8), 640)
    rng = np.random.default_rng(3)
    corners = np.sort(rng.uniform(-20, 660, (20, 2, 2)), axis=1)  # some leave the image
    rows = np.concatenate([corners[:, 0], corners[:, 1], rng.uniform(size=(20, 2))], axis=1).astype(
        np.float32
    )

    ours = yolo_codec.unletterbox(rows, box, width, height)
    reference = clip_boxes(  # type: ignore[no-untyped-call]
        scale_boxes((640, 640), rows[:, :4].copy(), (height, width)), (height, width)
    )

    np.testing.assert_allclose(ours[:, :4], reference, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(ours[:, 4:], rows[:, 4:])


_UNDER_TRITON_VENV = """
import importlib, json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])  # as model.py imports it in Triton
codec = importlib.import_module("yolo_codec")
rng = np.random.default_rng(0)
image = rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)
padded, box = codec.letterbox(image, 640)
raw = rng.uniform(0, 1, (2, 6, 500)).astype(np.float32) ** 4
raw[:, :4] *= 640
rows = codec.decode(raw, 0.1, 0.5, 50)
print(json.dumps({
    "numpy": np.__version__,
    "checksum": int(padded.astype(np.int64).sum()),
    "box": [box.ratio, box.pad_x, box.pad_y],
    "rows": [r.tolist() for r in rows],
}))
"""


def test_codec_runs_the_same_under_numpy_1() -> None:
    """It is imported by model.py inside Triton's venv, which pins numpy<2."""
    python = Settings().var_dir / "triton-venv" / "bin" / "python"
    if not python.exists():
        pytest.skip(
            f"no Triton venv at {python} (labelloop stack up, or the triton tests, make it)"
        )
    out = subprocess.run(
        [str(python), "-c", _UNDER_TRITON_VENV, str(Path(yolo_codec.__file__).parent)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    there: dict[str, Any] = json.loads(out.stdout)
    assert there["numpy"].startswith("1.")

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)
    padded, box = yolo_codec.letterbox(image, 640)
    raw = rng.uniform(0, 1, (2, 6, 500)).astype(np.float32) ** 4
    raw[:, :4] *= 640
    rows = yolo_codec.decode(raw, 0.1, 0.5, 50)
    assert there["checksum"] == int(padded.astype(np.int64).sum())
    assert there["box"] == [list(box.ratio), box.pad_x, box.pad_y]
    for theirs, mine in zip(there["rows"], rows, strict=True):
        np.testing.assert_allclose(np.array(theirs, dtype=np.float32).reshape(-1, 6), mine)
