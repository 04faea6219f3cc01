"""Dataset writing, training, evaluation and ONNX export of the detector, free of service I/O.

Ultralytics and torch are imported inside the functions: importing this module stays cheap, so
light code (schemas, tests of the service's wiring) may import it without pulling torch in.
Every function runs offline: nothing here may reach a model hub or an asset server.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from labelloop.images import DecodedFrame, UnusableImage, decode_frame

if TYPE_CHECKING:
    from ultralytics import YOLO

BoxTuple = tuple[str, float, float, float, float]
"""``(label, x, y, w, h)`` in pixels, ``x``/``y`` the top-left corner (the API's shape)."""
Xyxy = tuple[float, ...]

FIRST_MODEL = "yolov8n.yaml"
"""Built from its YAML (random weights): a hub checkpoint would need a download."""
DATASET_SUFFIX = ".png"
"""A frame is written as 8-bit RGB PNG in its displayed orientation (labelloop.images), so
Ultralytics never sees the original format or its EXIF: what trains is what serving decodes.
An 8-bit RGB JPEG or PNG without rotation or transparency is already that and keeps its bytes
(:data:`STORED_SUFFIXES`)."""
STORED_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png"}
IMAGE_SUFFIXES = frozenset({DATASET_SUFFIX, *STORED_SUFFIXES.values()})
MATCH_IOU = 0.5


@dataclass(frozen=True)
class LabeledFrame:
    """One labelled image as the trainer receives it."""

    name: str
    image: bytes
    """The frame's bytes as ingest validated them (any format ingest accepts)."""
    width: int
    height: int
    """The displayed size ingest recorded, which the boxes are in."""
    boxes: Sequence[BoxTuple]


@dataclass(frozen=True)
class DatasetInfo:
    """A YOLO dataset on disk; ``dataset_hash`` identifies its content in run.json."""

    root: Path
    data_yaml: Path
    labels: tuple[str, ...]
    train_count: int
    val_count: int
    dataset_hash: str
    skipped: tuple[tuple[str, str], ...] = ()
    """``(frame, reason)`` of each labeled frame left out, so run.json says what did not train."""


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


# --- dataset ---------------------------------------------------------------------------------


def write_dataset(
    root: Path,
    items: list[LabeledFrame],
    labels: list[str],
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    skipped: Sequence[tuple[str, str]] = (),
) -> DatasetInfo:
    """Write ``items`` as a YOLO dataset under the empty folder ``root``.

    Each image is decoded as serving decodes it (:func:`labelloop.images.decode_frame`) and
    written as RGB PNG; a frame that does not decode to the size its boxes were drawn on is
    left out and listed in ``skipped`` with its reason, after those the caller passes in.
    A frame goes to val when a hash of ``seed`` and its name falls under ``val_fraction``: the
    split of a frame never changes as the task grows, so no val frame leaks into a later train.
    """
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must lie strictly between 0 and 1")
    names = [item.name for item in items]
    if len(set(names)) != len(names):
        raise ValueError("frame names must be unique")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; stale files would join the dataset")
    left_out = list(skipped)
    staging = root / "decoded"  # one decoded frame in memory at a time, each written once
    staging.mkdir(parents=True, exist_ok=True)
    usable = []
    staged: dict[str, Path] = {}
    for item in items:
        decoded = _decode(item)
        if isinstance(decoded, str):
            left_out.append((item.name, decoded))
            continue
        stem = _file_stem(item.name)
        if decoded.as_stored:
            staged[item.name] = staging / (stem + STORED_SUFFIXES[decoded.format])
            staged[item.name].write_bytes(item.image)
        else:  # compress_level 1: several times faster than the default, and still lossless
            staged[item.name] = staging / (stem + DATASET_SUFFIX)
            decoded.image.save(staged[item.name], compress_level=1)
        usable.append(item)
    items = usable
    if len(items) < 2:
        why = "; ".join(f"{name}: {reason}" for name, reason in left_out)
        raise ValueError(
            "a dataset needs at least 2 frames (one to train on, one to validate)"
            + (f"; left out: {why}" if why else "")
        )

    draws = {item.name: _split_draw(item.name, seed) for item in items}
    val = {name for name, draw in draws.items() if draw < val_fraction}
    if not val:
        val = {min(draws, key=draws.__getitem__)}
    if len(val) == len(items):
        val.remove(max(draws, key=draws.__getitem__))

    digest = hashlib.sha256(json.dumps(labels).encode())
    for item in sorted(items, key=lambda frame: frame.name):
        split = "val" if item.name in val else "train"
        lines = _yolo_lines(item, labels)
        stem = _file_stem(item.name)
        label_text = "".join(line + "\n" for line in lines).encode()
        for folder in ("images", "labels"):
            (root / folder / split).mkdir(parents=True, exist_ok=True)
        staged[item.name].replace(root / "images" / split / staged[item.name].name)
        (root / "labels" / split / (stem + ".txt")).write_bytes(label_text)
        record = [item.name, split, hashlib.sha256(item.image).hexdigest(), lines]
        digest.update(json.dumps(record).encode())
    shutil.rmtree(staging)

    root = root.resolve()
    data_yaml = root / "data.yaml"
    # JSON is YAML: no YAML library needed to write what Ultralytics reads
    data_yaml.write_text(
        json.dumps(
            {
                "path": str(root),
                "train": "images/train",
                "val": "images/val",
                "names": dict(enumerate(labels)),
            },
            indent=2,
        )
    )
    return DatasetInfo(
        root=root,
        data_yaml=data_yaml,
        labels=tuple(labels),
        train_count=len(items) - len(val),
        val_count=len(val),
        dataset_hash=digest.hexdigest(),
        skipped=tuple(left_out),
    )


def _split_draw(name: str, seed: int) -> float:
    """A uniform draw in [0, 1) fixed by the seed and the name alone."""
    value = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(value[:8], "big") / 2**64


def _file_stem(name: str) -> str:
    """A safe, readable file name; the hash keeps names that sanitise alike apart."""
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", name)[-80:]
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def _decode(item: LabeledFrame) -> DecodedFrame | str:
    """The frame's displayed RGB pixels, or why it cannot train: labels are only right for the
    size they were drawn on (a frame ingested before EXIF orientation was applied may differ)."""
    try:
        decoded = decode_frame(item.image)
    except UnusableImage as unusable:
        return f"{unusable.code}: {unusable.reason}"
    if decoded.image.size != (item.width, item.height):
        return (
            f"decodes to {decoded.width}x{decoded.height}, but its labels were drawn on "
            f"{item.width}x{item.height} (as declared)"
        )
    return decoded


def _yolo_lines(item: LabeledFrame, labels: list[str]) -> list[str]:
    """``class cx cy w h`` normalised; boxes are clipped since Ultralytics drops a whole image
    with a coordinate outside [0, 1]."""
    lines = []
    for label, x, y, w, h in item.boxes:
        if label not in labels:
            raise ValueError(f"{item.name}: label {label!r} is not in {labels}")
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(item.width)), min(y + h, float(item.height))
        if x1 <= x0 or y1 <= y0:
            continue  # nothing of the box lies inside the image
        cx, cy = (x0 + x1) / 2 / item.width, (y0 + y1) / 2 / item.height
        nw, nh = (x1 - x0) / item.width, (y1 - y0) / item.height
        lines.append(f"{labels.index(label)} {cx:.6f} {cy:.6f} {nw:.6f} {nh:.6f}")
    return lines


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
        from ultralytics import YOLO
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


def train(
    dataset: DatasetInfo,
    *,
    base_weights: Path | None,
    out_dir: Path,
    epochs: int,
    imgsz: int,
    seed: int,
    device: str,
    on_epoch: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    batch: int = 8,
    cpu_threads: int | None = None,
    config_dir: Path | None = None,
) -> TrainOutcome:
    """Train from ``yolov8n.yaml`` (first run) or warm-start from a previous run's ``best.pt``.

    The recipe (AdamW at 3e-3, no mosaic, no warmup) gives confident boxes on small sets; ``nbs``
    equals ``batch`` so every batch is an optimiser step: Ultralytics' default accumulates to 64
    images, which on a few dozen frames means less than one step per epoch.
    ``on_epoch(done, epochs)`` is called after each epoch's validation; then, if
    ``should_stop()`` is true, :class:`TrainingStopped` is raised with that epoch's checkpoint
    (Ultralytics writes ``last.pt`` before the callback). ``cpu_threads``
    defaults to every core; pass 1 where other busy processes share the CPU: torch's OpenMP
    threads wait on each other, and an epoch took 3.6 times longer with 2 threads beside one
    busy process on 2 cores, where 1 thread took 1.5 times longer.
    """
    out_dir = out_dir.resolve()
    _prepare_ultralytics(config_dir or out_dir / "ultralytics-config")
    model = import_yolo()(str(base_weights) if base_weights else FIRST_MODEL)
    done = 0

    def report(trainer: Any) -> None:
        nonlocal done
        epoch = trainer.epoch + 1
        if epoch > done and epoch <= trainer.epochs:  # final_eval reports once more, past the end
            done = epoch
            if on_epoch:
                on_epoch(epoch, trainer.epochs)
            if should_stop and should_stop() and epoch < trainer.epochs:
                raise TrainingStopped(epoch, Path(trainer.last))

    model.add_callback("on_fit_epoch_end", report)
    start = time.monotonic()
    with _cpu_threads(model, device, cpu_threads):
        model.train(
            data=str(dataset.data_yaml),
            epochs=epochs,
            imgsz=imgsz,
            batch=batch,
            nbs=batch,
            seed=seed,
            deterministic=True,
            optimizer="AdamW",
            lr0=3e-3,
            mosaic=0.0,
            warmup_epochs=0,
            plots=False,
            project=str(out_dir),
            name="train",
            exist_ok=True,
            verbose=False,
            **_device_args(device),
        )
    trainer = model.trainer
    assert trainer is not None  # model.train() sets it
    return TrainOutcome(
        weights=Path(trainer.best),
        epochs=done,
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


# --- export and devices ----------------------------------------------------------------------


def export_onnx(weights: Path, *, imgsz: int) -> Path:
    """ONNX next to ``weights`` with a dynamic batch axis, so the server can batch requests."""
    _prepare_ultralytics(weights.resolve().parent / "ultralytics-config")
    exported = import_yolo()(str(weights)).export(
        format="onnx", imgsz=imgsz, dynamic=True, simplify=True, device="cpu"
    )
    return Path(exported)


def select_device(prefer_gpu: bool = True, min_free_mib: int = 2048) -> str:
    """``cuda:N`` for the GPU with the most free memory if it has ``min_free_mib``, else cpu."""
    if not prefer_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    free = {index: torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())}
    index = max(free, key=free.__getitem__, default=None)
    if index is None or free[index] < min_free_mib * 2**20:
        return "cpu"
    return f"cuda:{index}"
