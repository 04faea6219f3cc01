"""Pre-annotation detectors: a task's YOLO model (ONNX) run in this process or on Triton.

Both take encoded images and give boxes in the original image's pixels, letterboxed and
decoded by :mod:`labeler_assist.yolo_codec` as Ultralytics' ``predict(rect=False)`` does, so a
model answers the same wherever it runs. Images are decoded by
:func:`labelloop.images.decode_frame`, as ingest validated them and the trainer wrote them
(displayed orientation, EXIF applied; 8-bit RGB), so boxes are in the pixel frame whose size
ingest recorded and the labels use. onnxruntime and tritonclient are imported only when a
detector that needs them is built.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from labeler_assist import yolo_codec
from labelloop.images import decode_frame

MAX_DET = 300
"""Ultralytics' default cap on boxes per image."""
MAX_BATCH_SIZE = 16
"""The largest batch Triton's dynamic batcher forms for one model."""
IN_PROCESS_BATCH = 8
"""Images per onnxruntime run in process: 64 at once ran slower than batches of 8 on 2 cores
(and a 640-px batch of 64 is 300 MB of input alone)."""


@dataclass(frozen=True)
class Detection:
    """One box in the original image's pixels, ``x``/``y`` its top-left corner (the API's shape).

    ``label`` is the class index, i.e. the position of the label in the task's label list.
    """

    label: int
    score: float
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class _Prepared:
    """An image letterboxed for the model, and what maps its boxes back."""

    pixels: np.ndarray
    letterbox: yolo_codec.Letterbox
    width: int
    height: int


def prepare_image(image: bytes, imgsz: int) -> _Prepared:
    """Decode as the trainer did (``UnusableImage`` if it cannot be) and letterbox."""
    rgb = np.asarray(decode_frame(image).image)
    pixels, box = yolo_codec.letterbox(rgb, imgsz)
    return _Prepared(pixels, box, width=rgb.shape[1], height=rgb.shape[0])


def _detections(rows: np.ndarray, prepared: _Prepared) -> list[Detection]:
    boxes = yolo_codec.unletterbox(rows, prepared.letterbox, prepared.width, prepared.height)
    return [
        Detection(int(label), float(score), float(x1), float(y1), float(x2 - x1), float(y2 - y1))
        for x1, y1, x2, y2, score, label in boxes.tolist()
    ]


def _unpad(detections: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Triton's padded ``[n, max_det, 6]`` boxes and ``[n, 1]`` counts as one array per image."""
    return [rows[:count] for rows, count in zip(detections, counts[:, 0].tolist(), strict=True)]


class OnnxRuntimeDetector:
    """A YOLO ONNX model run in this process: the fallback without Triton, and the reference.

    ``detect`` blocks while the model runs; call it from a worker thread in async code.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        imgsz: int,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = MAX_DET,
        threads: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Idle worker threads spin by default: on 2 idle cores that is faster (yolov8n, 640 px:
        # 51 vs 75 ms), but with a training run alongside it is twice as slow (215 vs 117 ms),
        # and here the service, Triton, the trainer and the stack share the cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        # onnxruntime-gpu lists CUDA first; the CPU build lists only the CPU provider.
        providers = [
            name
            for name in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if name in ort.get_available_providers()
        ]
        source = model if isinstance(model, bytes) else str(model)
        self._session = ort.InferenceSession(source, options, providers=providers)
        model_input = self._session.get_inputs()[0]
        self._input: str = model_input.name
        batch = model_input.shape[0]
        # A model exported without dynamic=True takes a fixed batch (usually one image).
        self._batch: int = batch if isinstance(batch, int) else IN_PROCESS_BATCH
        self.imgsz, self.conf, self.iou, self.max_det = imgsz, conf, iou, max_det

    def detect(self, images: list[bytes]) -> list[list[Detection]]:
        """Boxes for each encoded image, in one onnxruntime run per batch."""
        prepared = [prepare_image(image, self.imgsz) for image in images]
        found: list[np.ndarray] = []
        for start in range(0, len(prepared), self._batch):
            batch = np.stack([item.pixels for item in prepared[start : start + self._batch]])
            raw = self._session.run(None, {self._input: yolo_codec.to_nchw(batch)})[0]
            found += yolo_codec.decode(raw, self.conf, self.iou, self.max_det)
        return [_detections(rows, item) for rows, item in zip(found, prepared, strict=True)]


def triton_config(
    imgsz: int,
    conf: float,
    iou: float,
    *,
    max_det: int = MAX_DET,
    max_batch_size: int = MAX_BATCH_SIZE,
    threads: int | None = None,
) -> dict[str, Any]:
    """The model configuration for :mod:`labeler_assist.triton_model` serving one detector.

    Inputs are letterboxed uint8 images (a quarter of float32 on the wire) and outputs boxes
    after NMS, so little crosses the wire; the dynamic batcher merges concurrent requests.
    """
    parameters: dict[str, float | int] = {"conf": conf, "iou": iou, "max_det": max_det}
    if threads:
        parameters["threads"] = threads
    return {
        "backend": "python",
        "max_batch_size": max_batch_size,
        "dynamic_batching": {
            "preferred_batch_size": [size for size in (4, 8) if size <= max_batch_size],
            "max_queue_delay_microseconds": 2000,
        },
        "input": [{"name": "images", "data_type": "TYPE_UINT8", "dims": [imgsz, imgsz, 3]}],
        "output": [
            {"name": "detections", "data_type": "TYPE_FP32", "dims": [max_det, 6]},
            {"name": "count", "data_type": "TYPE_INT32", "dims": [1]},
        ],
        "instance_group": [{"kind": "KIND_CPU", "count": 1}],
        "parameters": {name: {"string_value": str(value)} for name, value in parameters.items()},
    }


def triton_files(onnx: bytes) -> dict[str, bytes]:
    """The model version folder Triton receives with the load request (nothing on its disk)."""
    package = resources.files("labeler_assist")
    return {
        "file:1/model.py": package.joinpath("triton_model.py").read_bytes(),
        "file:1/yolo_codec.py": package.joinpath("yolo_codec.py").read_bytes(),
        "file:1/model.onnx": onnx,
    }


@dataclass(frozen=True)
class _Served:
    name: str
    imgsz: int


class TritonDetector:
    """A task's detector on Triton over gRPC aio (ten times faster than HTTP aio here).

    Images are decoded and letterboxed in a worker thread, then sent one request each so that
    Triton's dynamic batcher can merge them with other callers'. Build it inside the event loop
    that uses it (gRPC aio channels belong to one loop).
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        from tritonclient.grpc import aio

        self._aio = aio
        self._client = aio.InferenceServerClient(url)
        self._timeout_s = timeout_s
        self._served: _Served | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    async def load(
        self,
        model_name: str,
        onnx: bytes,
        imgsz: int,
        conf: float,
        iou: float,
        *,
        max_det: int = MAX_DET,
        threads: int | None = None,
    ) -> None:
        """(Re)load ``model_name`` with this ONNX model; later calls detect with it."""
        config = triton_config(imgsz, conf, iou, max_det=max_det, threads=threads)
        # Loading starts a backend process and an onnxruntime session: allow more than a request.
        await self._client.load_model(
            model_name,
            config=json.dumps(config),
            files=triton_files(onnx),
            client_timeout=max(self._timeout_s, 120.0),
        )
        self._served = _Served(model_name, imgsz)

    async def is_ready(self) -> bool:
        """Whether the loaded model answers (False when none is loaded)."""
        if self._served is None:
            return False
        name = self._served.name
        ready: bool = await self._client.is_model_ready(name, client_timeout=self._timeout_s)
        return ready

    async def unload(self) -> None:
        await self._client.unload_model(self._require().name, client_timeout=self._timeout_s)
        self._served = None

    async def detect(self, images: list[bytes]) -> list[list[Detection]]:
        """Boxes for each encoded image."""
        served = self._require()
        prepared = await asyncio.to_thread(lambda: [prepare_image(i, served.imgsz) for i in images])
        found = await asyncio.gather(*(self._infer(served.name, item) for item in prepared))
        return [_detections(rows, item) for rows, item in zip(found, prepared, strict=True)]

    async def _infer(self, model_name: str, item: _Prepared) -> np.ndarray:
        pixels = item.pixels[None]
        tensor = self._aio.InferInput("images", list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        result = await self._client.infer(model_name, [tensor], client_timeout=self._timeout_s)
        return _unpad(result.as_numpy("detections"), result.as_numpy("count"))[0]

    def _require(self) -> _Served:
        if self._served is None:
            raise RuntimeError("no model loaded: call load() first")
        return self._served


class TritonHttpDetector:
    """A blocking HTTP client for a model already loaded (scripts and benchmarks).

    It learns the input size and largest batch from Triton and sends images in batches. Build
    and use it in one thread: tritonclient's HTTP client is gevent-based and its connections
    belong to the thread that made them (from another thread it fails, or hangs).
    """

    def __init__(self, url: str, model_name: str, *, timeout_s: float = 30.0) -> None:
        from tritonclient import http

        self._http = http
        self._client = http.InferenceServerClient(
            url, connection_timeout=timeout_s, network_timeout=timeout_s
        )
        self._name = model_name
        config = self._client.get_model_config(model_name)
        self._imgsz = int(config["input"][0]["dims"][0])
        self._max_batch = int(config["max_batch_size"])

    def close(self) -> None:
        self._client.close()

    def detect(self, images: list[bytes]) -> list[list[Detection]]:
        """Boxes for each encoded image, one request per ``max_batch_size`` images."""
        prepared = [prepare_image(image, self._imgsz) for image in images]
        found: list[np.ndarray] = []
        for start in range(0, len(prepared), self._max_batch):
            pixels = np.stack([item.pixels for item in prepared[start : start + self._max_batch]])
            tensor = self._http.InferInput("images", list(pixels.shape), "UINT8")
            tensor.set_data_from_numpy(pixels)
            result = self._client.infer(self._name, [tensor])
            found += _unpad(result.as_numpy("detections"), result.as_numpy("count"))
        return [_detections(rows, item) for rows, item in zip(found, prepared, strict=True)]
