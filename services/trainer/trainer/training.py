"""Training, evaluation and ONNX export of the detector with Ultralytics, free of service I/O.

The dataset it trains on is written by :mod:`trainer.dataset`.

Ultralytics and torch are imported inside the functions: importing this module stays cheap, so
light code (schemas, tests of the service's wiring) may import it without pulling torch in.
Every function runs offline: nothing here may reach a model hub or an asset server.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image
from pydantic import ValidationError

from schemas.events import EpochMetrics
from trainer.dataset import IMAGE_SUFFIXES, DatasetInfo

if TYPE_CHECKING:
    from ultralytics.models import YOLO

Xyxy = tuple[float, ...]

FIRST_MODEL = "yolov8n.yaml"
"""Built from its YAML (random weights): a hub checkpoint would need a download."""
MATCH_IOU = 0.5


class TrainingStopped(Exception):
    """Training stopped after an epoch on request (``should_stop``); ``checkpoint`` holds it."""

    def __init__(self, epochs_done: int, checkpoint: Path) -> None:
        super().__init__(f"stopped after epoch {epochs_done}")
        self.epochs_done, self.checkpoint = epochs_done, checkpoint


@dataclass(frozen=True)
class TrainOutcome:
    weights: Path
    """best.pt: the epoch with the best validation fitness, not necessarily the last."""
    epochs: int
    duration_s: float
    device: str


@dataclass(frozen=True)
class Metrics:
    """mAP from Ultralytics; precision and recall at the serving confidence (IoU >= 0.5).

    mAP alone misleads: a model can reach high mAP with every confidence under the serving
    threshold and so propose nothing to labellers. Precision and recall at ``conf`` catch that.
    """

    map50: float
    map50_95: float
    precision: float
    recall: float


# --- Ultralytics, offline --------------------------------------------------------------------


def _prepare_ultralytics(config_dir: Path) -> None:
    """Set what Ultralytics reads once, at import, and give it a font so it downloads none.

    Without ``Arial.ttf`` in its config folder Ultralytics downloads one while checking the
    dataset. Once imported, its config folder is fixed, so the font goes wherever that is.
    """
    os.environ["YOLO_OFFLINE"] = "1"
    if "ultralytics" in sys.modules:
        from ultralytics.utils import USER_CONFIG_DIR

        font = Path(USER_CONFIG_DIR) / "Arial.ttf"
    else:
        os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
        font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_find_font(), font)


def import_yolo() -> type[YOLO]:
    """Ultralytics' ``YOLO`` without its process-wide patch of ``PIL.Image.open``.

    Importing Ultralytics replaces ``Image.open`` with a wrapper that, on bytes Pillow cannot
    identify, imports ``pi_heif`` and raises ``ModuleNotFoundError`` instead of Pillow's
    ``UnidentifiedImageError``: code sharing the process (ingest's validation) would then
    misreport a non-image. Pillow's own function is put back.
    """
    original_open = Image.open
    try:
        from ultralytics.models import YOLO
    finally:
        Image.open = original_open
    return YOLO


def _find_font() -> Path:
    """Any TrueType font serves; matplotlib (an Ultralytics dependency) ships DejaVuSans."""
    spec = importlib.util.find_spec("matplotlib")
    folders = (spec.submodule_search_locations or []) if spec else []
    candidates = [
        Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" for folder in folders
    ]
    candidates += sorted(Path("/usr/share/fonts").rglob("*.ttf"))
    font = next((path for path in candidates if path.is_file()), None)
    if font is None:
        raise FileNotFoundError("no TrueType font found; Ultralytics would download Arial.ttf")
    return font


@contextmanager
def _cpu_threads(model: YOLO, device: str, threads: int | None = None) -> Iterator[None]:
    """Run torch on ``threads`` CPU threads (default: every core this process may use), and
    give the process its thread count back afterwards.

    Ultralytics sets torch to ``cpu_count - 1`` threads (one on 2 cores) each time it picks a
    device, so the count is set again in its callbacks, in the thread that does the work.
    """
    import torch

    before = torch.get_num_threads()
    if threads is None:  # taskset and cpusets narrow this; the machine may have more
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    count = threads or os.cpu_count() or 1

    def raise_threads(_: object) -> None:
        torch.set_num_threads(count)

    if device == "cpu":
        for event in ("on_train_start", "on_val_start", "on_predict_start"):
            model.add_callback(event, raise_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _device_args(device: str) -> dict[str, Any]:
    """AMP stays off everywhere: on GPU its check downloads yolo26n.pt to compare against.

    On CPU the data loads in the training process: a loader process would take a core from
    the convolutions, which dominate.
    """
    return {"device": device, "amp": False, **({"workers": 0} if device == "cpu" else {})}


# --- training --------------------------------------------------------------------------------


TRAIN_ARGS: dict[str, Any] = {
    "deterministic": True,
    "optimizer": "AdamW",
    "lr0": 3e-3,
    "mosaic": 0.0,
    "warmup_epochs": 0,
    "plots": False,
    "name": "train",
    "exist_ok": True,
    "verbose": False,
}
"""Ultralytics arguments every run shares: the recipe (see :func:`train`), determinism, and
quiet output without plots in ``<out_dir>/train``."""


@dataclass(frozen=True)
class EpochDone:
    """An epoch a run just finished: how far it is, its figures, and the checkpoint Ultralytics
    wrote after it (``last.pt``: weights and optimizer, what a resumed run starts from)."""

    done: int
    epochs: int
    metrics: EpochMetrics | None
    checkpoint: Path


EpochCallback = Callable[[EpochDone], None]
"""``on_epoch(epoch)``: called after each epoch's validation."""

_VALIDATION_KEYS = {
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
    "map50": "metrics/mAP50(B)",
    "map50_95": "metrics/mAP50-95(B)",
}
"""Our names for the validation figures Ultralytics' detection trainer keeps in ``metrics``."""


def epoch_metrics(trainer: Any) -> EpochMetrics | None:
    """The epoch Ultralytics' trainer just finished: its mean training losses and validation.

    The losses are ``tloss``: a mapping by name in Ultralytics 8.4, a tensor in their order
    (``loss_names``) before. None where a figure is missing or not finite (a diverging epoch's
    loss is NaN): a curve with a gap is better than a run that fails over its report.
    """
    names = ("box_loss", "cls_loss", "dfl_loss")
    try:
        raw = trainer.tloss
        losses = [float(raw[n]) for n in names] if isinstance(raw, dict) else list(map(float, raw))
        figures = {ours: float(trainer.metrics[key]) for ours, key in _VALIDATION_KEYS.items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if len(losses) != len(names) or not all(map(math.isfinite, [*losses, *figures.values()])):
        return None
    try:
        return EpochMetrics(**dict(zip(names, losses, strict=True)), **figures)
    except ValidationError:  # outside its bounds: nothing to plot
        return None


class _EpochReport:
    """Ultralytics' ``on_fit_epoch_end`` callback: reports each finished epoch once, with its
    figures, then stops the run if asked to (with the checkpoint Ultralytics wrote just before)."""

    def __init__(
        self, on_epoch: EpochCallback | None, should_stop: Callable[[], bool] | None
    ) -> None:
        self.on_epoch, self.should_stop = on_epoch, should_stop
        self.done = 0

    def __call__(self, trainer: Any) -> None:
        epoch = trainer.epoch + 1
        if self.done < epoch <= trainer.epochs:  # final_eval reports once more, past the end
            self.done = epoch
            if self.on_epoch:
                figures = epoch_metrics(trainer)
                self.on_epoch(EpochDone(epoch, trainer.epochs, figures, Path(trainer.last)))
            if self.should_stop and self.should_stop() and epoch < trainer.epochs:
                raise TrainingStopped(epoch, Path(trainer.last))


def train(
    dataset: DatasetInfo,
    *,
    base_weights: Path | None,
    out_dir: Path,
    epochs: int,
    imgsz: int,
    seed: int,
    device: str,
    on_epoch: EpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch: int = 8,
    cpu_threads: int | None = None,
    config_dir: Path | None = None,
) -> TrainOutcome:
    """Train from ``yolov8n.yaml`` (first run) or warm-start from a previous run's ``best.pt``.

    The recipe (AdamW at 3e-3, no mosaic, no warmup) gives confident boxes on small sets; ``nbs``
    equals ``batch`` so every batch is an optimiser step: Ultralytics' default accumulates to 64
    images, which on a few dozen frames means less than one step per epoch.
    ``on_epoch(EpochDone)`` is called after each epoch's validation; then, if
    ``should_stop()`` is true, :class:`TrainingStopped` is raised with that epoch's checkpoint
    (Ultralytics writes ``last.pt`` before the callback). ``cpu_threads``
    defaults to every core; pass 1 where other busy processes share the CPU: torch's OpenMP
    threads wait on each other, and an epoch took 3.6 times longer with 2 threads beside one
    busy process on 2 cores, where 1 thread took 1.5 times longer.
    """
    out_dir = out_dir.resolve()
    _prepare_ultralytics(config_dir or out_dir / "ultralytics-config")
    model = import_yolo()(str(base_weights) if base_weights else FIRST_MODEL)
    progress = _EpochReport(on_epoch, should_stop)
    model.add_callback("on_fit_epoch_end", progress)
    start = time.monotonic()
    with _cpu_threads(model, device, cpu_threads):
        model.train(
            data=str(dataset.data_yaml),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            nbs=batch,
            seed=seed,
            **TRAIN_ARGS,
            project=str(out_dir),
            **_device_args(device),
        )
    trainer = model.trainer
    assert trainer is not None  # model.train() sets it
    return TrainOutcome(
        weights=Path(trainer.best),
        epochs=progress.done,
        duration_s=time.monotonic() - start,
        device=str(trainer.device),
    )


# --- evaluation ------------------------------------------------------------------------------


def evaluate(
    weights: Path, dataset: DatasetInfo, *, imgsz: int, conf: float, device: str
) -> Metrics:
    """mAP on the val split, and precision/recall of what labellers would see at ``conf``."""
    _prepare_ultralytics(weights.resolve().parent / "ultralytics-config")
    model = import_yolo()(str(weights))
    images = sorted(
        p for p in (dataset.root / "images" / "val").iterdir() if p.suffix in IMAGE_SUFFIXES
    )
    with _cpu_threads(model, device), tempfile.TemporaryDirectory() as scratch:
        summary = model.val(
            data=str(dataset.data_yaml),
            split="val",
            imgsz=imgsz,
            batch=8,
            plots=False,
            project=scratch,
            name="val",
            verbose=False,
            **_device_args(device),
        )
        results: list[Any] = list(
            model.predict(
                [str(path) for path in images],
                imgsz=imgsz,
                conf=conf,
                device=device,
                verbose=False,
                save=False,
            )
        )
    tp = predicted = truths = 0
    for path, result in zip(images, results, strict=True):
        boxes = result.boxes
        found = [
            (score, int(cls), tuple(xyxy))
            for score, cls, xyxy in zip(
                boxes.conf.tolist(), boxes.cls.tolist(), boxes.xyxy.tolist(), strict=True
            )
        ]
        label_file = dataset.root / "labels" / "val" / f"{path.stem}.txt"
        truth = _ground_truth(label_file, result.orig_shape)
        tp += _match(found, truth)
        predicted += len(found)
        truths += len(truth)
    return Metrics(
        map50=float(summary.box.map50),
        map50_95=float(summary.box.map),
        precision=tp / predicted if predicted else float(truths == 0),
        recall=tp / truths if truths else 1.0,
    )


def _ground_truth(label_file: Path, shape: tuple[int, int]) -> list[tuple[int, Xyxy]]:
    """Boxes of a val image back in pixels, from the label file Ultralytics validated on."""
    height, width = shape
    truth: list[tuple[int, Xyxy]] = []
    for line in label_file.read_text().splitlines():
        cls, cx, cy, w, h = line.split()
        x, y, bw, bh = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        truth.append((int(cls), (x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2)))
    return truth


def _match(found: list[tuple[float, int, Xyxy]], truth: list[tuple[int, Xyxy]]) -> int:
    """True positives: most confident prediction first, each takes its best free same-class
    ground-truth box at IoU >= 0.5."""
    free = list(truth)
    hits = 0
    for _, cls, box in sorted(found, key=lambda item: -item[0]):
        candidates = [(_iou(box, other), i) for i, (c, other) in enumerate(free) if c == cls]
        best = max(candidates, default=(0.0, -1))
        if best[0] >= MATCH_IOU:
            free.pop(best[1])
            hits += 1
    return hits


def _iou(a: Xyxy, b: Xyxy) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --- export ----------------------------------------------------------------------------------


def export_onnx(weights: Path, *, imgsz: int) -> Path:
    """ONNX next to ``weights`` with a dynamic batch axis, so the server can batch requests."""
    _prepare_ultralytics(weights.resolve().parent / "ultralytics-config")
    exported = import_yolo()(str(weights)).export(
        format="onnx", imgsz=imgsz, dynamic=True, simplify=True, device="cpu"
    )
    return Path(exported)
