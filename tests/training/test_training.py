"""The trainer's pure functions: dataset writing (fast) and one real train → evaluate → export.

The end-to-end test trains yolov8n from its YAML on synthetic frames, on CPU, with the network
refused: a hidden download (weights, fonts, AMP check) fails it loudly instead of hanging CI.
"""

from __future__ import annotations

import io
import ipaddress
import json
import socket
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from PIL import Image

from labelloop_tools.synthetic import synthetic_frame
from trainer.dataset import LabeledFrame, write_dataset
from trainer.devices import choose_device, visible_gpus
from trainer.training import EpochDone, _match, evaluate, export_onnx, train

TRAIN_SEEDS = range(48)
HELD_OUT_SEEDS = range(1000, 1040)  # frames the model never saw, not even in its val split
IMGSZ = 192
SERVING_CONF = 0.25
EPOCHS = 40
# Measured on 2 cores (see the trainer's notes): 25 epochs gave recall 0.96-1.0 and precision
# 0.98-1.0 on the held-out frames over 3 seeds on one machine, but recall 0.73 on another with
# the same code and packages (other CPU numerics); 40 epochs clear the floors on both.
RECALL_FLOOR = 0.85
PRECISION_FLOOR = 0.85


def frame(seed: int, fmt: str = "JPEG") -> LabeledFrame:
    image, boxes = synthetic_frame(seed)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return LabeledFrame(
        name=f"cam/frame-{seed:04d}.jpg",
        image=buffer.getvalue(),
        width=image.width,
        height=image.height,
        boxes=[(box.label, box.x, box.y, box.w, box.h) for box in boxes],
    )


def blank(name: str, boxes: list[tuple[str, float, float, float, float]]) -> LabeledFrame:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buffer, "PNG")
    return LabeledFrame(name=name, image=buffer.getvalue(), width=200, height=100, boxes=boxes)


def split_of(root: Path) -> dict[str, list[str]]:
    return {
        split: sorted(path.name for path in (root / "images" / split).iterdir())
        for split in ("train", "val")
    }


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.partition("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that leaves the machine."""
    original = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback(str(address[0])):
            raise OSError(f"test refused a network connection to {address}")
        original(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


# --- write_dataset: fast ---------------------------------------------------------------------


def test_yolo_lines_are_normalised_and_clipped(tmp_path: Path) -> None:
    item = blank(
        "a",
        [
            ("dog", 10, 20, 50, 40),
            ("cat", 180, -10, 40, 30),  # sticks out right and top: clipped to the image
            ("cat", 250, 10, 20, 20),  # wholly outside: dropped
        ],
    )
    info = write_dataset(tmp_path / "ds", [item, blank("b", [])], ["cat", "dog"])
    labels = {path.stem: path.read_text() for path in (tmp_path / "ds").glob("labels/*/*.txt")}
    lines = next(text for stem, text in labels.items() if stem.startswith("a-")).splitlines()
    assert lines == [
        "1 0.175000 0.400000 0.250000 0.400000",
        "0 0.950000 0.100000 0.100000 0.200000",
    ]
    assert next(text for stem, text in labels.items() if stem.startswith("b-")) == ""
    data = json.loads(info.data_yaml.read_text())  # JSON is valid YAML
    assert data["path"] == str(info.root) and info.root.is_absolute()
    assert data["names"] == {"0": "cat", "1": "dog"}
    assert (info.train_count, info.val_count) == (1, 1)
    assert {path.suffix for path in info.root.glob("images/*/*")} == {".png"}


def test_split_is_deterministic_and_stable_as_the_task_grows(tmp_path: Path) -> None:
    items = [frame(seed) for seed in range(30)]
    first = write_dataset(tmp_path / "one", items, ["box"])
    again = write_dataset(tmp_path / "two", list(reversed(items)), ["box"])
    grown = write_dataset(
        tmp_path / "three", items + [frame(seed) for seed in range(30, 60)], ["box"]
    )
    assert split_of(first.root) == split_of(again.root)
    assert first.dataset_hash == again.dataset_hash, "order of items does not matter"
    assert first.val_count >= 1 and first.train_count + first.val_count == 30
    old_val = set(split_of(first.root)["val"])
    assert old_val <= set(split_of(grown.root)["val"]), "a val frame stays val"
    assert old_val.isdisjoint(split_of(grown.root)["train"])
    reseeded = write_dataset(tmp_path / "four", items, ["box"], seed=1)
    assert split_of(reseeded.root) != split_of(first.root)
    assert reseeded.dataset_hash != first.dataset_hash


def test_at_least_one_val_and_one_train_frame(tmp_path: Path) -> None:
    items = [frame(seed) for seed in range(3)]
    few = write_dataset(tmp_path / "few", items, ["box"], val_fraction=1e-9)
    most = write_dataset(tmp_path / "most", items, ["box"], val_fraction=1 - 1e-9)
    assert few.val_count == 1 and most.train_count == 1


def test_hash_follows_content(tmp_path: Path) -> None:
    items = [frame(seed) for seed in range(5)]
    base = write_dataset(tmp_path / "a", items, ["box"]).dataset_hash
    moved = [*items[:-1], replace(items[-1], boxes=[("box", 1, 1, 9, 9)])]
    assert write_dataset(tmp_path / "b", moved, ["box"]).dataset_hash != base
    other_image = [*items[:-1], replace(items[-1], image=frame(99).image)]
    assert write_dataset(tmp_path / "c", other_image, ["box"]).dataset_hash != base
    assert write_dataset(tmp_path / "d", items, ["box", "other"]).dataset_hash != base


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ([blank("a", [("bird", 1, 1, 5, 5)]), blank("b", [])], "not in"),
        ([blank("a", []), blank("a", [])], "unique"),
        ([blank("a", [])], "at least 2"),
        ([replace(blank("a", []), width=201), blank("b", [])], "declared"),
    ],
)
def test_refuses_bad_input(tmp_path: Path, items: list[LabeledFrame], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        write_dataset(tmp_path / "ds", items, ["cat"])


def test_refuses_a_folder_with_stale_files(tmp_path: Path) -> None:
    (tmp_path / "stale.txt").write_text("old")
    with pytest.raises(FileExistsError):
        write_dataset(tmp_path, [blank("a", []), blank("b", [])], ["cat"])


def test_matching_counts_each_truth_once() -> None:
    truth: list[tuple[int, tuple[float, ...]]] = [
        (0, (0.0, 0.0, 10.0, 10.0)),
        (0, (20.0, 20.0, 30.0, 30.0)),
    ]
    found: list[tuple[float, int, tuple[float, ...]]] = [
        (0.9, 0, (0.0, 0.0, 10.0, 10.0)),
        (0.8, 0, (1.0, 1.0, 10.0, 10.0)),  # a duplicate of the first: a false positive
        (0.7, 1, (20.0, 20.0, 30.0, 30.0)),  # right place, wrong class
        (0.6, 0, (22.0, 22.0, 32.0, 32.0)),  # IoU 0.47 < 0.5
    ]
    assert _match(found, truth) == 1


def test_runs_take_the_gpu_with_most_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the scheduler does (NVML, no torch): the fullest GPU is passed over, and a run waits
    while every GPU is too full."""
    free_mib = [1000, 5000]
    nvml = types.SimpleNamespace(
        NVMLError=type("NVMLError", (Exception,), {}),
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: len(free_mib),
        nvmlDeviceGetHandleByIndex=lambda index: index,
        nvmlDeviceGetMemoryInfo=lambda index: types.SimpleNamespace(free=free_mib[index] * 2**20),
    )
    monkeypatch.setitem(sys.modules, "pynvml", cast(types.ModuleType, nvml))
    assert choose_device(visible_gpus(), 4000) == "cuda:1"
    assert choose_device(visible_gpus(), 6000) is None, "every GPU is too full: wait"


# --- one real training run -------------------------------------------------------------------


@pytest.mark.training
@pytest.mark.timeout(1800)
def test_train_evaluate_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    np = pytest.importorskip("numpy")
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR"):  # train() sets them; restored afterwards
        monkeypatch.delenv(name, raising=False)
    dataset = write_dataset(tmp_path / "ds", [frame(seed) for seed in TRAIN_SEEDS], ["box"])
    # all but one held-out frame land in val (write_dataset keeps one to train on; unused here)
    held_out = write_dataset(
        tmp_path / "held", [frame(seed) for seed in HELD_OUT_SEEDS], ["box"], val_fraction=0.99
    )
    progress: list[EpochDone] = []

    outcome = train(
        dataset,
        base_weights=None,
        out_dir=tmp_path / "run",
        epochs=EPOCHS,
        imgsz=IMGSZ,
        seed=0,
        device="cpu",
        on_epoch=progress.append,
    )

    assert [(e.done, e.epochs) for e in progress] == [
        (epoch, EPOCHS) for epoch in range(1, EPOCHS + 1)
    ]
    assert progress[-1].checkpoint.name == "last.pt" and progress[-1].checkpoint.is_file()
    curve = [e.metrics for e in progress]
    assert all(figures is not None for figures in curve), "every epoch has its figures"
    first, last = curve[0], curve[-1]
    assert first is not None and last is not None
    assert last.box_loss < first.box_loss, "the training loss falls over the run"
    assert last.map50 > first.map50
    assert outcome.epochs == EPOCHS and outcome.device == "cpu"
    assert outcome.weights.name == "best.pt" and outcome.weights.is_file()
    metrics = evaluate(outcome.weights, held_out, imgsz=IMGSZ, conf=SERVING_CONF, device="cpu")
    assert metrics.recall >= RECALL_FLOOR, metrics
    assert metrics.precision >= PRECISION_FLOOR, metrics
    assert metrics.map50 >= 0.9, metrics

    onnx_path = export_onnx(outcome.weights, imgsz=IMGSZ)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    assert model_input.name == "images" and isinstance(model_input.shape[0], str)
    for batch in (1, 2):
        images = np.zeros((batch, 3, IMGSZ, IMGSZ), dtype=np.float32)
        (output,) = session.run(None, {"images": images})
        assert output.shape[0] == batch
