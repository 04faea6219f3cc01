"""The bundled model-loop samples are what ``labelloop_tools.synthetic`` makes, labels included,
and the demo finds them (or says where it looked) through ``python -m labelloop_tools demo``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from labelloop_tools.cli import app
from labelloop_tools.demo import CHECKOUT_SAMPLES, Samples, SamplesNotFoundError
from labelloop_tools.synthetic import DEFAULT_SIZE, synthetic_frame

REPOSITORY = Path(__file__).resolve().parents[2]


def test_bundled_labels_are_the_frames_ground_truth() -> None:
    samples = Samples.locate()
    labels = json.loads(samples.loop_labels.read_text())
    frames = sorted(path.name for path in samples.loop.glob("*.jpg"))
    assert frames == sorted(labels) and len(frames) == 52
    for name, boxes in labels.items():
        seed = int(name.removeprefix("loop_").removesuffix(".jpg"))
        _, truth = synthetic_frame(seed)
        assert boxes == [{"label": b.label, "x": b.x, "y": b.y, "w": b.w, "h": b.h} for b in truth]
        with Image.open(samples.loop / name) as image:
            assert image.size == DEFAULT_SIZE and image.format == "JPEG"


def test_the_demo_reads_the_repositorys_samples_by_default() -> None:
    assert CHECKOUT_SAMPLES == REPOSITORY / "samples"
    samples = Samples.locate()
    assert len(list(samples.frames.glob("*"))) == 25


def test_missing_samples_are_named_before_anything_runs(tmp_path: Path) -> None:
    (tmp_path / "frames").mkdir()
    with pytest.raises(SamplesNotFoundError, match=str(tmp_path / "loop")):
        Samples.locate(tmp_path)

    # No stack is running here: the demo stops at the samples, naming the path it looked at.
    done = CliRunner().invoke(app, ["demo", "--samples", str(tmp_path / "nowhere")])
    assert done.exit_code == 2
    assert str(tmp_path / "nowhere") in " ".join(done.output.split())
