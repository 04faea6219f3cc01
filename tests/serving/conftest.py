"""One small detector trained once (and cached across runs), and no network for these tests.

Training takes minutes on CPU, so the weights and their ONNX export are kept under
``var/test-models/<hash of the recipe>``; a second run only loads them. Ultralytics is built
from YAML with ``YOLO_OFFLINE=1``, and every outbound connection is refused so that a hidden
download fails loudly instead of hanging or silently succeeding.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labelloop_tools.synthetic import synthetic_frame

CACHE_ROOT = Path("var/test-models")
YOLO_CONFIG_DIR = CACHE_ROOT / "ultralytics-config"

RECIPE: dict[str, Any] = {
    "model": "yolov8n.yaml",
    "frame_size": [192, 144],
    "train_seeds": [0, 48],
    "val_seeds": [1000, 1016],
    "imgsz": 192,
    "epochs": 80,
    "batch": 16,
    "optimizer": "AdamW",
    "lr0": 3e-3,
    "mosaic": 0.0,
    "warmup_epochs": 0,
    "seed": 0,
}
HELD_OUT_SEEDS = range(5000, 5012)
"""Frames the detector never saw, for the comparisons."""


@dataclass(frozen=True)
class TrainedModel:
    weights: Path
    onnx: Path
    imgsz: int


def ultralytics_yolo() -> Any:
    """Ultralytics' ``YOLO`` class, imported offline with a font already in place."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(YOLO_CONFIG_DIR.resolve())
    font = YOLO_CONFIG_DIR / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        source = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copy(source, font)
    from trainer.training import import_yolo

    return import_yolo()


def _refuse_remote(connect: Any) -> Any:
    def guarded(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
            if not loopback:
                raise ConnectionRefusedError(f"tests/serving refuse outbound network: {address}")
        return connect(sock, address)

    return guarded


@contextmanager
def refused_network() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _refuse_remote(socket.socket.connect))
        patch.setattr(socket.socket, "connect_ex", _refuse_remote(socket.socket.connect_ex))
        yield


@pytest.fixture(autouse=True)
def no_network() -> Iterator[None]:
    """Per test, so that the refusal ends with this folder's tests (tests after them talk to
    their real servers)."""
    with refused_network():
        yield


def _write_split(root: Path, split: str, seeds: range) -> None:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    width, height = RECIPE["frame_size"]
    for seed in seeds:
        image, boxes = synthetic_frame(seed, (width, height))
        image.save(images / f"{seed}.png")
        rows = [
            f"0 {(b.x + b.w / 2) / width:.6f} {(b.y + b.h / 2) / height:.6f} "
            f"{b.w / width:.6f} {b.h / height:.6f}"
            for b in boxes
        ]
        (labels / f"{seed}.txt").write_text("\n".join(rows) + "\n")


def train(target: Path) -> TrainedModel:
    """Train the recipe's detector into ``target`` and export it to ONNX (dynamic shapes)."""
    import torch

    yolo = ultralytics_yolo()
    torch.set_num_threads(os.cpu_count() or 1)  # Ultralytics' default of one is ~30 % slower
    work = target.with_name(target.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    _write_split(data, "train", range(*RECIPE["train_seeds"]))
    _write_split(data, "val", range(*RECIPE["val_seeds"]))
    (data / "data.yaml").write_text(
        json.dumps(
            {
                "path": str(data.resolve()),
                "train": "images/train",
                "val": "images/val",
                "names": {0: "box"},
            }
        )
    )
    model = yolo(RECIPE["model"])
    model.train(
        data=str(data / "data.yaml"),
        imgsz=RECIPE["imgsz"],
        epochs=RECIPE["epochs"],
        batch=RECIPE["batch"],
        optimizer=RECIPE["optimizer"],
        lr0=RECIPE["lr0"],
        mosaic=RECIPE["mosaic"],
        warmup_epochs=RECIPE["warmup_epochs"],
        seed=RECIPE["seed"],
        amp=False,
        plots=False,
        workers=0,
        device="cpu",
        project=str((work / "runs").resolve()),
        name="train",
        exist_ok=True,
        verbose=False,
    )
    best = work / "runs" / "train" / "weights" / "best.pt"
    onnx = Path(yolo(str(best)).export(format="onnx", dynamic=True, imgsz=RECIPE["imgsz"]))
    work_out = work / "out"
    work_out.mkdir()
    shutil.copy(best, work_out / "model.pt")
    shutil.copy(onnx, work_out / "model.onnx")
    (work_out / "recipe.json").write_text(json.dumps(RECIPE, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    work_out.rename(target)  # only a complete model becomes visible to a later run
    shutil.rmtree(work, ignore_errors=True)
    return load_cached(target)


def load_cached(target: Path) -> TrainedModel:
    return TrainedModel(target / "model.pt", target / "model.onnx", RECIPE["imgsz"])


def model_dir() -> Path:
    key = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]
    return CACHE_ROOT / key


@pytest.fixture(scope="session")
def trained_model() -> TrainedModel:
    target = model_dir()
    if (target / "model.onnx").exists():
        return load_cached(target)
    with refused_network():
        return train(target)
