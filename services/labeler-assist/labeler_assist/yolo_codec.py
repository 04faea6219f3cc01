"""Ultralytics YOLO pre- and post-processing in plain numpy, without torch, cv2 or Ultralytics.

This file is also shipped, as is, into each Triton Python-backend model directory and imported
there by ``model.py``, under Triton's own venv (numpy<2); so it depends on numpy alone and uses
nothing newer than numpy 1.26.

It reproduces what ``YOLO(...).predict`` does for a detection model:

- :func:`letterbox` is Ultralytics' ``LetterBox`` with ``auto=False, center=True`` and padding
  114: the same rounding of the resized shape and of the padding, and a bilinear resize that
  reproduces ``cv2.resize(..., INTER_LINEAR)``: OpenCV's pixel mapping, 11-bit fixed-point
  weights and rounding, off by one grey level on under 0.5 % of pixels (OpenCV's scalar and
  vector paths round apart). It is numpy, so tens of milliseconds where OpenCV takes one.
- By default Ultralytics' predictor letterboxes to the smallest stride-multiple rectangle
  (``rect=True``), not to a square; served models take a fixed square, so a default ``predict``
  sees other padding and its boxes differ a little (IoU above 0.89, scores within 0.05 on the
  tests' model). With ``rect=False`` the boxes are the same.
- :func:`decode` is ``non_max_suppression`` (best class per anchor, ``score > conf``, class-aware
  greedy NMS suppressing ``IoU > iou``, ``max_det``) for the raw ONNX output.
- :func:`unletterbox` is ``scale_boxes`` followed by ``clip_boxes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_VALUE = 114
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS
_MAX_WH = 7680  # Ultralytics' per-class box offset for class-aware NMS in one pass
_MAX_NMS = 30000  # Ultralytics keeps at most this many candidates (best first) per image


@dataclass(frozen=True)
class Letterbox:
    """How a letterboxed image maps back to the original: ``x_orig = (x - pad_x) / ratio[0]``.

    ``ratio`` holds the horizontal and vertical gains actually applied (after the resized sides
    were rounded to whole pixels), as Ultralytics' ``scale_boxes`` uses them.
    """

    ratio: tuple[float, float]
    pad_x: int
    pad_y: int


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Resize an HWC uint8 image to fit ``size``x``size`` keeping its aspect, pad with 114."""
    height, width = image.shape[:2]
    gain = min(size / height, size / width)
    # Python's round (half to even), as Ultralytics rounds; each side keeps at least one pixel.
    new_w, new_h = max(round(width * gain), 1), max(round(height * gain), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    resized = image if (new_w, new_h) == (width, height) else _resize_linear(image, new_w, new_h)
    padded = np.full((size, size, image.shape[2]), PAD_VALUE, dtype=np.uint8)
    padded[top : top + new_h, left : left + new_w] = resized
    return padded, Letterbox((new_w / width, new_h / height), left, top)


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR source indices and fixed-point weights along one axis."""
    scale = src / dst
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(pos).astype(np.int64)
    frac = pos - first
    before = first < 0
    first[before], frac[before] = 0, 0
    after = first >= src - 1
    first[after], frac[after] = src - 1, 0
    second = np.minimum(first + 1, src - 1)
    w1 = np.rint(frac * _COEF_SCALE).astype(np.int32)
    w0 = np.rint((1 - frac) * _COEF_SCALE).astype(np.int32)
    return first, second, w0, w1


def _resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bilinear resize with ``cv2.INTER_LINEAR``'s mapping and rounding (see the module doc).

    Horizontal pass first, as OpenCV does it, on the source rows used only once each; then the
    vertical pass, which drops 4 then 16 bits of each product before the final rounding, as
    OpenCV's vectorised code does. In-place steps keep the int32 temporaries few.
    """
    x0, x1, wx0, wx1 = _linear_taps(image.shape[1], width)
    y0, y1, wy0, wy1 = _linear_taps(image.shape[0], height)
    rows, which = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    source = np.take(image, rows, axis=0)
    mixed = np.take(source, x0, axis=1).astype(np.int32)
    mixed *= wx0[:, None]
    right = np.take(source, x1, axis=1).astype(np.int32)
    right *= wx1[:, None]
    mixed += right
    mixed >>= 4
    out = np.take(mixed, which[:height], axis=0)
    out *= wy0[:, None, None]
    out >>= 16
    below = np.take(mixed, which[height:], axis=0)
    below *= wy1[:, None, None]
    below >>= 16
    out += below
    out += 2
    out >>= 2
    return np.minimum(out, 255).astype(np.uint8)


def to_nchw(images: np.ndarray) -> np.ndarray:
    """A uint8 NHWC batch as the float32 NCHW in [0, 1] that YOLO models take."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255)


def decode(raw: np.ndarray, conf: float, iou: float, max_det: int) -> list[np.ndarray]:
    """Raw YOLO output ``[B, 4 + nc, anchors]`` (cx, cy, w, h, class scores) to boxes per image.

    Each image's array is ``(N, 6)`` float32 rows ``x1, y1, x2, y2, score, class``, best score
    first, in the letterboxed image's pixels.
    """
    return [_decode_one(pred.T, conf, iou, max_det) for pred in raw.astype(np.float32)]


def _decode_one(pred: np.ndarray, conf: float, iou: float, max_det: int) -> np.ndarray:
    scores_all = pred[:, 4:]
    classes = scores_all.argmax(1)
    scores = scores_all[np.arange(len(pred)), classes]
    keep = scores > conf
    if not keep.any():
        return np.zeros((0, 6), dtype=np.float32)
    xy, half_wh = pred[keep, :2], pred[keep, 2:4] / 2
    rows = np.concatenate(
        [xy - half_wh, xy + half_wh, scores[keep, None], classes[keep, None].astype(np.float32)],
        axis=1,
    )
    if len(rows) > _MAX_NMS:
        rows = rows[np.argsort(-rows[:, 4], kind="stable")[:_MAX_NMS]]
    # Shifting each class's boxes far apart makes one greedy pass class-aware.
    shifted = rows[:, :4] + rows[:, 5:6] * np.float32(_MAX_WH)
    kept: np.ndarray = rows[_nms(shifted, rows[:, 4], iou, max_det)]
    return kept


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Greedy NMS as ``torchvision.ops.nms``: drop boxes overlapping a better one by ``> iou``.

    Stops once ``limit`` boxes are kept: later ones would be cut by ``max_det`` anyway.
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        inter_w = np.maximum(
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]),
            0,
        )
        inter_h = np.maximum(
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]),
            0,
        )
        inter = inter_w * inter_h
        with np.errstate(divide="ignore", invalid="ignore"):  # empty boxes: NaN, never dropped
            overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[~(overlap > iou)]
    return np.array(kept, dtype=np.int64)


def unletterbox(boxes: np.ndarray, box: Letterbox, orig_w: int, orig_h: int) -> np.ndarray:
    """Boxes (``x1, y1, x2, y2, ...`` rows) from letterboxed pixels to the original image's."""
    out = boxes.astype(np.float32)
    out[:, [0, 2]] = ((out[:, [0, 2]] - box.pad_x) / box.ratio[0]).clip(0, orig_w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - box.pad_y) / box.ratio[1]).clip(0, orig_h)
    return out
