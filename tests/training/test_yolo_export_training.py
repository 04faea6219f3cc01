"""Ultralytics trains from labelloop's YOLO export as it is (issue 18): ``data.yaml`` beside
its splits, no path rewritten, no file moved. Tiny on purpose (one epoch, 64 px): what is
tested is that Ultralytics finds and reads every image and label of the export, not what the
model learns."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelloop.datasets import Dataset, Item, write_dataset
from labelloop.datasets.files import DirectorySink
from labelloop_tools.synthetic import write_synthetic_frames
from trainer.training import FIRST_MODEL, TRAIN_ARGS, _prepare_ultralytics, import_yolo


@pytest.mark.training
@pytest.mark.timeout(600)
def test_ultralytics_trains_from_the_yolo_export_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR"):  # set below; restored afterwards
        monkeypatch.delenv(name, raising=False)
    from PIL import Image

    frames = tmp_path / "frames"
    truth = write_synthetic_frames(frames, range(12))
    items = []
    for name, boxes in truth.items():
        width, height = Image.open(frames / name).size
        items.append(Item(name, width, height, labels=tuple(boxes)))
    items.append(Item("unlabeled.jpg", width, height))  # only pre-annotated: not training data
    (frames / "unlabeled.jpg").write_bytes((frames / name).read_bytes())
    export = tmp_path / "export"
    write_dataset(
        "yolo",
        Dataset(("box",), tuple(items)),
        DirectorySink(export),
        lambda item: (frames / item.name).read_bytes(),
    )

    _prepare_ultralytics(tmp_path / "ultralytics-config")
    model = import_yolo()(FIRST_MODEL)
    model.train(
        data=str(export / "data.yaml"),  # the export's own file, untouched
        epochs=1,
        imgsz=64,
        batch=4,
        nbs=4,
        seed=0,
        device="cpu",
        project=str(tmp_path / "run"),
        **TRAIN_ARGS,
    )
    trainer = model.trainer
    assert trainer is not None and Path(trainer.best).is_file()
    from ultralytics.data.utils import load_dataset_cache_file

    counts = {}
    for split in ("train", "val"):
        cache = load_dataset_cache_file(export / "labels" / f"{split}.cache")
        found, missing, empty, corrupt, total = cache["results"]
        assert (missing, empty, corrupt) == (0, 0, 0), cache["msgs"]
        assert found == total == len(list((export / "images" / split).iterdir()))
        counts[split] = found
    assert counts["train"] + counts["val"] == len(truth) and counts["val"] >= 1
