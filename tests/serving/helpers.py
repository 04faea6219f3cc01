"""Box comparison and a private Triton, shared by the serving tests and their benchmark."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from PIL import Image

from labeler_assist.detectors import Detection
from labelloop.config import Settings
from labelloop.stack.base import StackError, port_open
from labelloop.stack.triton import TritonComponent

Corners = tuple[float, float, float, float]


def png(image: Image.Image) -> bytes:
    """PNG, lossless: both sides of a comparison decode exactly the same pixels."""
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def corners(detection: Detection) -> Corners:
    return (detection.x, detection.y, detection.x + detection.w, detection.y + detection.h)


def iou(a: Corners, b: Corners) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def assert_same_boxes(
    ours: Sequence[Detection],
    reference: Sequence[tuple[Corners, float, int]],
    *,
    min_iou: float,
    score_tolerance: float,
    conf: float = 0.0,
) -> None:
    """Every box clearly above ``conf`` on either side has its twin (corners, class, score) on
    the other. Boxes within ``score_tolerance`` of the threshold may fall on one side only,
    since the two runtimes' scores differ by up to that much."""
    clear = conf + score_tolerance
    for box, score, label in reference:
        if score < clear:
            continue
        assert ours, ("no box of ours for", box, score)
        twin = max(ours, key=lambda mine: iou(corners(mine), box))
        assert iou(corners(twin), box) >= min_iou, (twin, box)
        assert twin.label == label
        assert abs(twin.score - score) <= score_tolerance, (twin, score)
    for mine in ours:
        if mine.score < clear:
            continue
        assert reference, ("no reference box for", mine)
        box, score, label = max(reference, key=lambda ref: iou(corners(mine), ref[0]))
        assert iou(corners(mine), box) >= min_iou, (mine, box)
        assert mine.label == label
        assert abs(mine.score - score) <= score_tolerance, (mine, score)


class _ServingTriton(TritonComponent):
    """Its own pid file, log and model folder: a stack's Triton and other tests' are left alone."""

    name = "triton-serving-test"


@contextmanager
def private_triton() -> Iterator[Settings]:
    """A tritonserver of these tests' own on ports 18100-18102, stopped whatever happens."""
    settings = Settings(triton_http_port=18100, triton_grpc_port=18101, triton_metrics_port=18102)
    server = _ServingTriton(settings)
    server.install(print)
    server.prepare(print)
    server.daemon.stop()  # a server left behind by an interrupted run
    for port in (settings.triton_http_port, settings.triton_grpc_port):
        if port_open(settings.triton_host, port):
            raise StackError(f"port {port} is already in use")
    argv, env = server.command()
    server.daemon.start(argv, env=env)
    try:
        deadline = time.monotonic() + settings.stack_start_timeout_s
        while not server.healthy():
            if server.daemon.exited_early() or time.monotonic() > deadline:
                raise StackError(f"tritonserver did not become ready:\n{server.daemon.log_tail()}")
            time.sleep(0.2)
        yield settings
    finally:
        server.daemon.stop()
