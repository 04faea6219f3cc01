"""Every export format read by Datumaro, CVAT's own dataset library (issue 18), in a venv of
its own: the boxes it finds are those labelloop wrote, and nothing is skipped (the probe fails
on any warning of a dropped file, box or image)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelloop.datasets import DirectorySink, write_dataset
from labelloop.datasets.files import file_names
from tests.datasets.samples import image_bytes, sample_dataset
from tests.tool_venvs import read_with_datumaro

READERS = {"coco": "coco_instances", "yolo": "yolo", "cvat": "cvat", "voc": "voc_detection"}


def expected(fmt: str) -> dict[str, list[list[Any]]]:
    """Datumaro's view: items by file stem; CVAT's model boxes come with their score."""
    source = sample_dataset()
    files = file_names([item.name for item in source.items])
    found = {}
    for item in source.items:
        if fmt == "yolo" and item.labels is None:
            continue  # not training data: under images/unlabeled, which data.yaml does not name
        boxes = [[b.label, b.x, b.y, b.w, b.h, None] for b in item.labels or ()]
        if fmt == "cvat":
            boxes += [[b.label, b.x, b.y, b.w, b.h, b.score] for b in item.predictions]
        found[Path(files[item.name]).stem] = sorted(boxes, key=repr)
    return found


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_datumaro_reads_every_export(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / fmt
    write_dataset(fmt, sample_dataset(), DirectorySink(root), lambda item: image_bytes(item.name))  # type: ignore[arg-type]
    if fmt == "coco":
        # COCO's detection results are no instances file: Datumaro (rightly) skips them with a
        # warning, which the probe counts as lost data; pycocotools reads them (unit tests)
        (root / "results" / "detections_default.json").unlink()
    read = read_with_datumaro(root, READERS[fmt])
    assert read["labels"] == ["car", "person", "traffic light"]
    # Datumaro's YOLO reader leaves float32 noise on the pixels (12.800000190734863)
    got = {
        frame: sorted(
            ([b[0], *(round(v, 3) for v in b[1:5]), b[5]] for b in entry["boxes"]), key=repr
        )
        for frame, entry in read["frames"].items()
    }
    assert got == expected(fmt)
    source = sample_dataset()
    files = file_names([item.name for item in source.items])
    sizes = {Path(files[item.name]).stem: [item.height, item.width] for item in source.items}
    for frame, entry in read["frames"].items():
        assert entry["size"] == sizes[frame]
