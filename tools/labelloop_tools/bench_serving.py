"""``make bench``'s model-in-the-loop sections: ``retrain``, ``preannotate_640``,
``preannotate_batch``.

``retrain`` runs the bundled model-loop task through the running services and times the
threshold event → ``model.published``. The pre-annotation sections then serve the newest
published model, end to end per image (JPEG decode, letterbox, inference, NMS), on 1280x720
frames so that decoding and a real resize count: through the stack's Triton over HTTP and gRPC,
with onnxruntime in this process, and with Ultralytics' own ``predict`` as the reference.
"""

from __future__ import annotations

import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlmodel import Session, col, select

from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.storage import ObjectStore
from labelloop_tools.synthetic import synthetic_frame

IMGSZ = 640
BATCH_IMAGES = 64
REPEAT = 50
BENCH_MODEL = "labelloop-bench"
"""The Triton model name the benchmark loads (no task's own name is touched)."""


def bench_retrain(settings: Settings, console: Console) -> dict[str, Any]:
    from labelloop_tools.demo import Samples, run_model_loop_demo

    outcome = run_model_loop_demo(
        settings, console, settings.var_dir / "bench-retrain", Samples.locate()
    )
    if outcome.threshold_to_published_s is None:
        raise RuntimeError(f"the bundled task published no model: {outcome.ending.get('data')}")
    data = outcome.ending["data"]
    return {
        "threshold_to_published_s": outcome.threshold_to_published_s,
        "task_id": outcome.task_id,
        "version": data["version"],
        "metrics": data["metrics"],
        "epochs": settings.trainer_epochs,
        "imgsz": settings.model_imgsz,
    }


@dataclass(frozen=True)
class PublishedModel:
    task_id: str
    version: int
    onnx: bytes
    weights: Path


def newest_published_model(settings: Settings, workdir: Path) -> PublishedModel:
    """The most recently published version (from the trainer's table) and its files."""
    from trainer.models import ModelVersion
    from trainer.registry import fetch_weights, onnx_key

    with Session(get_engine(settings.database_url)) as session:
        newest = session.exec(
            select(ModelVersion)
            .where(col(ModelVersion.status).in_(["published", "retired"]))
            .order_by(col(ModelVersion.created_at).desc())
        ).first()
    if newest is None:
        raise RuntimeError("no published model yet: run the retrain section first")
    store = ObjectStore.from_settings(settings)
    return PublishedModel(
        newest.task_id,
        newest.version,
        store.get_bytes(onnx_key(newest.task_id, newest.version)),
        fetch_weights(
            store,
            newest.task_id,
            newest.version,
            workdir / "model.pt",
            sha256=newest.weights_sha256,
        ),
    )


def _frame(seed: int) -> bytes:
    image, _ = synthetic_frame(seed, (1280, 720))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _summary(samples_s: list[float]) -> tuple[float, float]:
    """p50 and p99 in milliseconds."""
    ms = sorted(sample * 1000 for sample in samples_s)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return round(statistics.median(ms), 1), round(p99, 1)


def _time(call: Callable[[], object], repeat: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return _summary(samples)


async def _time_async(
    call: Callable[[], Awaitable[object]], repeat: int, warmup: int = 3
) -> tuple[float, float]:
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return _summary(samples)


def _with_percentiles(figures: dict[str, Any], name: str, p50_p99: tuple[float, float]) -> None:
    figures[f"{name}_p50_ms"], figures[f"{name}_p99_ms"] = p50_p99


def bench_preannotate_640(settings: Settings, console: Console) -> dict[str, Any]:
    """One 1280x720 JPEG at a time, end to end, on each serving path."""
    from labeler_assist.detectors import OnnxRuntimeDetector, TritonDetector, TritonHttpDetector
    from trainer.training import import_yolo

    conf, iou = settings.serve_conf, settings.serve_iou
    with tempfile.TemporaryDirectory() as workdir:
        model = newest_published_model(settings, Path(workdir))
        frame = _frame(5000)
        figures: dict[str, Any] = {"model": f"{model.task_id} v{model.version}", "n": REPEAT}

        detector = OnnxRuntimeDetector(model.onnx, imgsz=IMGSZ, conf=conf, iou=iou)
        _with_percentiles(figures, "onnxruntime", _time(lambda: detector.detect([frame]), REPEAT))

        yolo = import_yolo()(str(model.weights))

        def ultralytics_one() -> None:
            from PIL import Image

            with Image.open(io.BytesIO(frame)) as image:
                rgb = image.convert("RGB")
            # rect=False: the same 640x640 input the served models take.
            yolo.predict(rgb, imgsz=IMGSZ, conf=conf, iou=iou, rect=False, verbose=False)

        _with_percentiles(figures, "ultralytics", _time(ultralytics_one, REPEAT))

        async def triton() -> None:
            async with TritonDetector(settings.triton_grpc_url) as served:
                await served.load(BENCH_MODEL, model.onnx, IMGSZ, conf, iou)
                grpc = await _time_async(lambda: served.detect([frame]), REPEAT)
                _with_percentiles(figures, "triton_grpc", grpc)

                def http_one() -> tuple[float, float]:
                    client = TritonHttpDetector(settings.triton_http_url, BENCH_MODEL)
                    try:  # built and used in one thread, as tritonclient's HTTP client needs
                        return _time(lambda: client.detect([frame]), REPEAT)
                    finally:
                        client.close()

                _with_percentiles(figures, "triton_http", await asyncio.to_thread(http_one))
                await served.unload()

        asyncio.run(triton())
    return figures


def bench_preannotate_batch(settings: Settings, console: Console) -> dict[str, Any]:
    """64 frames at once: concurrent Triton requests (its dynamic batcher merges them) versus
    onnxruntime in process (batches of 8)."""
    from labeler_assist.detectors import OnnxRuntimeDetector, TritonDetector

    conf, iou = settings.serve_conf, settings.serve_iou
    distinct = [_frame(5000 + index) for index in range(8)]
    burst = [distinct[index % len(distinct)] for index in range(BATCH_IMAGES)]
    with tempfile.TemporaryDirectory() as workdir:
        model = newest_published_model(settings, Path(workdir))
    figures: dict[str, Any] = {"images": BATCH_IMAGES}

    detector = OnnxRuntimeDetector(model.onnx, imgsz=IMGSZ, conf=conf, iou=iou)
    detector.detect(burst[:8])  # warm
    start = time.perf_counter()
    detector.detect(burst)
    figures["onnxruntime_img_per_s"] = round(BATCH_IMAGES / (time.perf_counter() - start), 1)

    async def triton() -> None:
        async with TritonDetector(settings.triton_grpc_url) as served:
            await served.load(BENCH_MODEL, model.onnx, IMGSZ, conf, iou)

            async def burst_of_calls() -> None:
                # Separate callers, as concurrent jobs are: their decoding overlaps inference.
                await asyncio.gather(*(served.detect([image]) for image in burst))

            await burst_of_calls()  # warm
            start = time.perf_counter()
            await burst_of_calls()
            figures["triton_img_per_s"] = round(BATCH_IMAGES / (time.perf_counter() - start), 1)
            await served.unload()

    asyncio.run(triton())
    return figures
