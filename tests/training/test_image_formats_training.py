"""A training run over every kind of image ingest accepts (issue 14, item 7): Ultralytics reads
the dataset the trainer writes from them, trains an epoch and evaluates, at the recorded size.

Before, one WEBP, BMP, TIFF or GIF frame failed every run of its task. Tiny on purpose (one
epoch, 64 px): what is tested is that the files are read, not what the model learns.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_image_formats import HEIGHT, KINDS, WIDTH
from trainer.dataset import LabeledFrame, write_dataset
from trainer.training import evaluate, train


@pytest.mark.training
@pytest.mark.timeout(600)
def test_ultralytics_trains_on_every_kind_ingest_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("YOLO_OFFLINE", "YOLO_CONFIG_DIR"):  # train() sets them; restored afterwards
        monkeypatch.delenv(name, raising=False)
    box = ("box", 0.0, 0.0, 16.0, 12.0)
    items = [
        LabeledFrame(f"{kind}.img", make(), WIDTH, HEIGHT, [box])
        for kind, (make, _, _) in KINDS.items()
    ]
    dataset = write_dataset(tmp_path / "ds", items, ["box"], val_fraction=0.3)
    assert dataset.skipped == ()

    outcome = train(
        dataset,
        base_weights=None,
        out_dir=tmp_path / "run",
        epochs=1,
        imgsz=64,
        seed=0,
        device="cpu",
        batch=4,
    )
    assert outcome.epochs == 1 and outcome.weights.is_file()
    # Ultralytics kept every image and label: none was dropped as corrupt or unreadable
    from ultralytics.data.utils import load_dataset_cache_file

    cache = load_dataset_cache_file(dataset.root / "labels" / "train.cache")
    found, missing, empty, corrupt, total = cache["results"]
    assert (found, missing, empty, corrupt) == (dataset.train_count, 0, 0, 0), cache["msgs"]
    assert total == dataset.train_count
    metrics = evaluate(outcome.weights, dataset, imgsz=64, conf=0.25, device="cpu")
    assert 0 <= metrics.map50 <= 1
