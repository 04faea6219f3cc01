"""The in-process detector answers as Ultralytics' own ``predict`` does, on a trained model."""

from __future__ import annotations

import pytest

from labeler_assist.detectors import OnnxRuntimeDetector
from labelloop_tools.synthetic import synthetic_frame
from tests.serving.conftest import HELD_OUT_SEEDS, TrainedModel, ultralytics_yolo
from tests.serving.helpers import assert_same_boxes, corners, iou, png

# The first test trains the model when var/test-models has no copy yet (minutes on CPU).
pytestmark = [pytest.mark.training, pytest.mark.timeout(1800)]

CONF, IOU = 0.25, 0.7
PARITY_CONF = 0.05
"""Parity compares the pipelines, not the model: a low threshold gives boxes to compare even
at sizes the model (trained at 192 px) is unsure of."""


@pytest.mark.parametrize(
    ("imgsz", "size"),
    [
        (192, (192, 144)),  # the training size
        (640, (640, 400)),  # padded top and bottom
        (640, (400, 640)),  # padded left and right
    ],
)
def test_onnxruntime_matches_ultralytics_predict(
    trained_model: TrainedModel, imgsz: int, size: tuple[int, int]
) -> None:
    frames = [synthetic_frame(seed, size)[0] for seed in HELD_OUT_SEEDS]
    detector = OnnxRuntimeDetector(trained_model.onnx, imgsz=imgsz, conf=PARITY_CONF, iou=IOU)
    ours = detector.detect([png(frame) for frame in frames])  # one onnxruntime batch

    yolo = ultralytics_yolo()(str(trained_model.weights))
    # rect=False: by default the predictor letterboxes to the smallest stride-multiple rectangle,
    # served models take a fixed square; with the same input both give the same boxes.
    results = yolo.predict(
        frames, imgsz=imgsz, conf=PARITY_CONF, iou=IOU, rect=False, verbose=False
    )

    assert any(ours), "no boxes at all: nothing was compared"
    for found, result in zip(ours, results, strict=True):
        reference = [
            (tuple(box), score, label)
            for box, score, label in zip(
                result.boxes.xyxy.tolist(),
                result.boxes.conf.tolist(),
                result.boxes.cls.int().tolist(),
                strict=True,
            )
        ]
        assert_same_boxes(found, reference, min_iou=0.99, score_tolerance=0.005, conf=PARITY_CONF)


def test_boxes_land_on_the_ground_truth(trained_model: TrainedModel) -> None:
    """Coordinates come back in the frame's pixels, x/y the top-left corner.

    A centre-based or letterboxed box would miss by half its size or the padding (IoU < 0.5).
    """
    detector = OnnxRuntimeDetector(trained_model.onnx, imgsz=192, conf=CONF, iou=IOU, threads=1)
    matched, total = 0, 0
    for seed in HELD_OUT_SEEDS:
        frame, truth = synthetic_frame(seed)
        (found,) = detector.detect([png(frame)])
        for box in truth:
            expected = (box.x, box.y, box.x + box.w, box.y + box.h)
            total += 1
            matched += any(iou(corners(mine), expected) >= 0.7 for mine in found)
        for mine in found:
            assert mine.label == 0
            assert 0 <= mine.x <= mine.x + mine.w <= frame.width
            assert 0 <= mine.y <= mine.y + mine.h <= frame.height
    # A small model may miss a box or two; a coordinate-convention error misses them all.
    assert matched >= 0.8 * total, f"{matched} of {total} objects found at IoU >= 0.7"


def test_no_images_no_boxes(trained_model: TrainedModel) -> None:
    assert OnnxRuntimeDetector(trained_model.onnx, imgsz=192).detect([]) == []
