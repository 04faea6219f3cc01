"""A task's detector served by the real tritonserver answers as onnxruntime in process does.

The server is private to this module (its own name, ports 18100-18102) and is always stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from tritonclient.grpc import aio

from labeler_assist.detectors import (
    Detection,
    OnnxRuntimeDetector,
    TritonDetector,
    TritonHttpDetector,
)
from labelloop.config import Settings
from labelloop_tools.synthetic import synthetic_frame
from tests.serving.conftest import HELD_OUT_SEEDS, TrainedModel
from tests.serving.helpers import assert_same_boxes, corners, png, private_triton

pytestmark = [
    pytest.mark.integration,
    pytest.mark.triton,
    pytest.mark.training,
    pytest.mark.timeout(1800),  # may train the model first
]

CONF, IOU, IMGSZ = 0.25, 0.7, 192
MODEL = "labelloop-serving-test"


@pytest.fixture(scope="module")
def triton() -> Iterator[Settings]:
    with private_triton() as settings:
        yield settings


def _detect_over_http(url: str, frames: list[bytes]) -> list[list[Detection]]:
    """Built and used in one thread: the HTTP client's gevent pool belongs to its thread."""
    http = TritonHttpDetector(url, MODEL)
    try:
        return http.detect(frames)  # batched requests
    finally:
        http.close()


async def _unloaded(url: str, timeout_s: float) -> bool:
    """Whether Triton itself stops serving the model (an unload finishes in the background)."""
    async with aio.InferenceServerClient(url) as client:
        deadline = time.monotonic() + timeout_s
        while await client.is_model_ready(MODEL):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.1)
    return True


async def test_triton_detector_matches_onnxruntime(
    triton: Settings, trained_model: TrainedModel
) -> None:
    frames = [png(synthetic_frame(seed)[0]) for seed in HELD_OUT_SEEDS]
    onnx = trained_model.onnx.read_bytes()
    reference = OnnxRuntimeDetector(onnx, imgsz=IMGSZ, conf=CONF, iou=IOU).detect(frames)

    async with TritonDetector(f"{triton.triton_host}:{triton.triton_grpc_port}") as detector:
        assert not await detector.is_ready()
        await detector.load(MODEL, onnx, IMGSZ, CONF, IOU)
        assert await detector.is_ready()

        served = await detector.detect(frames)  # one request each: the dynamic batcher merges
        http_url = f"{triton.triton_host}:{triton.triton_http_port}"
        served_http = await asyncio.to_thread(_detect_over_http, http_url, frames)

        await detector.unload()
        assert not await detector.is_ready()
        assert await _unloaded(f"{triton.triton_host}:{triton.triton_grpc_port}", timeout_s=10)
        with pytest.raises(RuntimeError, match="no model loaded"):
            await detector.detect(frames)

    assert any(reference)
    for expected, *answers in zip(reference, served, served_http, strict=True):
        boxes = [(corners(box), box.score, box.label) for box in expected]
        for found in answers:
            assert_same_boxes(found, boxes, min_iou=0.99, score_tolerance=1e-3)
