"""Datasets out and in (issue 18): each format written from one dataset and read back by
labelloop's own readers and, for COCO, by pycocotools; the zip's and the importer's guards."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from labelloop.datasets import (
    FORMATS,
    DatasetError,
    DirectorySink,
    ZipSink,
    extract_zip,
    read_dataset,
    write_dataset,
)
from labelloop.datasets.files import file_names
from labelloop.datasets.records import Box, Item
from labelloop.importer import fit_boxes, labeled_items, submissions
from tests.datasets.samples import LABELS, image_bytes, sample_dataset

BoxRow = tuple[str, float, float, float, float]


def write(tmp_path: Path, fmt: str) -> Path:
    root = tmp_path / fmt
    write_dataset(fmt, sample_dataset(), DirectorySink(root), lambda item: image_bytes(item.name))  # type: ignore[arg-type]
    return root


def labels_by_file(dataset_items: tuple[Item, ...]) -> dict[str, list[BoxRow]]:
    return {
        item.name: sorted(
            (b.label, round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2))
            for b in item.labels or ()
        )
        for item in dataset_items
    }


def expected(*, with_unlabeled: bool) -> dict[str, list[BoxRow]]:
    source = sample_dataset()
    files = file_names([item.name for item in source.items])
    return {
        files[item.name]: sorted(
            (b.label, round(b.x, 2), round(b.y, 2), round(b.w, 2), round(b.h, 2))
            for b in item.labels or ()
        )
        for item in source.items
        if with_unlabeled or item.labels is not None
    }


def test_file_names_keep_plain_names_and_part_stems_alike() -> None:
    files = file_names(["a.jpg", "a.png", "frame 7 (ü).png", "b.jpg", "A.gif"])
    assert files["b.jpg"] == "b.jpg"
    # "a.jpg", "a.png" and "A.gif" share a stem (YOLO and VOC name label files by it)
    stems = {Path(files[n]).stem.lower() for n in ("a.jpg", "a.png", "A.gif")}
    assert len(stems) == 3
    assert all(Path(files[n]).suffix == Path(n).suffix for n in files)
    assert " " not in files["frame 7 (ü).png"] and "ü" not in files["frame 7 (ü).png"]
    assert file_names(["x.jpg"]) == {"x.jpg": "x.jpg"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_reads_back_what_it_wrote(tmp_path: Path, fmt: str) -> None:
    root = write(tmp_path, fmt)
    back = read_dataset(fmt, root)  # type: ignore[arg-type]
    assert back.labels == LABELS
    # YOLO's train/val hold labeled frames only: the pre-annotated frame is not training data;
    # elsewhere it is an image without labels
    assert labels_by_file(back.items) == expected(with_unlabeled=fmt != "yolo")
    for item in back.items:  # sizes come from the images themselves
        assert item.path is not None and item.path.is_file()
        assert (item.width, item.height) == image_size_of(item.path)


def image_size_of(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_coco_export_loads_in_pycocotools_with_its_predictions(tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = write(tmp_path, "coco")
    truth = COCO(str(root / "annotations" / "instances_default.json"))
    source = sample_dataset()
    assert len(truth.getImgIds()) == len(source.items)
    assert len(truth.getAnnIds()) == sum(len(item.labels or ()) for item in source.items)
    assert [c["name"] for c in truth.loadCats(truth.getCatIds())] == list(LABELS)
    [car] = truth.getCatIds(catNms=["car"])
    assert len(truth.getAnnIds(catIds=[car])) == 2
    results = json.loads((root / "results" / "detections_default.json").read_text())
    assert sorted(r["score"] for r in results) == [0.42, 0.91]
    detections = truth.loadRes(str(root / "results" / "detections_default.json"))
    evaluation = COCOeval(truth, detections, "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    assert len(detections.getAnnIds()) == 2


def test_yolo_lines_and_predictions_with_confidence(tmp_path: Path) -> None:
    root = write(tmp_path, "yolo")
    data = json.loads((root / "data.yaml").read_text())
    assert data["names"] == {"0": "car", "1": "person", "2": "traffic light"}
    assert "path" not in data  # Ultralytics then reads the splits beside data.yaml
    labels = {p.name: p.read_text() for p in root.glob("labels/*/*.txt")}
    assert any(text == "" for text in labels.values())  # labeled empty: an empty file
    predictions = sorted(root.glob("predictions/*/*.txt"))
    assert [p.parent.name for p in predictions].count("unlabeled") == 1
    fields = [line.split() for p in predictions for line in p.read_text().splitlines()]
    assert all(len(f) == 6 for f in fields) and {f[5] for f in fields} == {"0.91000", "0.42000"}
    assert (root / "images" / "unlabeled" / "unlabeled.jpg").is_file()
    assert not (root / "labels" / "unlabeled").exists()


def test_cvat_marks_model_boxes_auto_with_their_score(tmp_path: Path) -> None:
    from defusedxml import ElementTree

    root = write(tmp_path, "cvat")
    document = ElementTree.parse(root / "annotations.xml").getroot()
    assert document.findtext("version") == "1.1"
    sources = [box.get("source") for box in document.iter("box")]
    assert sources.count("auto") == 2 and sources.count("manual") == 6
    scores = [a.text for a in document.iter("attribute") if a.get("name") == "score"]
    assert sorted(scores) == ["0.42000", "0.91000"]


def test_voc_writes_devkit_results_for_predictions(tmp_path: Path) -> None:
    root = write(tmp_path, "voc")
    assert (root / "labelmap.txt").read_text().splitlines()[1:] == [
        "car:::",
        "person:::",
        "traffic light:::",
    ]
    results = {p.name: p.read_text().split() for p in (root / "results" / "Main").iterdir()}
    assert sorted(results) == ["comp4_det_default_car-0.txt", "comp4_det_default_person-1.txt"]
    frame, score = results["comp4_det_default_car-0.txt"][:2]
    assert frame.startswith("a-") and score == "0.91000"  # a.jpg's stem, kept apart from a.png
    assert not (root / "Annotations" / "unlabeled.xml").exists()


def test_an_unknown_label_is_refused_not_written(tmp_path: Path) -> None:
    dataset = sample_dataset()
    broken = type(dataset)(labels=("car",), items=dataset.items[:1])
    with pytest.raises(DatasetError, match="traffic light"):
        write_dataset("coco", broken, DirectorySink(tmp_path / "x"), lambda item: b"")


def test_zip_export_unpacks_and_guards(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        write_dataset(
            "voc", sample_dataset(), ZipSink(archive), lambda item: image_bytes(item.name)
        )
    buffer.seek(0)
    extract_zip(buffer, tmp_path / "out", max_bytes=10_000_000)
    assert len(read_dataset("voc", tmp_path / "out").items) == 6
    with pytest.raises(DatasetError, match="not empty"):
        extract_zip(buffer, tmp_path / "out", max_bytes=10_000_000)
    buffer.seek(0)
    with pytest.raises(DatasetError, match="over 1,000 bytes"):
        extract_zip(buffer, tmp_path / "small", max_bytes=1000)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../escape.txt", b"x")
    with pytest.raises(DatasetError, match="not a path inside"):
        extract_zip(evil, tmp_path / "evil", max_bytes=1000)
    assert not (tmp_path / "escape.txt").exists()


def test_an_unreadable_image_is_left_out(tmp_path: Path) -> None:
    root = tmp_path / "coco"
    write_dataset(
        "coco",
        sample_dataset(),
        DirectorySink(root),
        lambda item: None if item.name == "b.jpg" else image_bytes(item.name),
    )
    names = [
        i["file_name"]
        for i in json.loads((root / "annotations" / "instances_default.json").read_text())["images"]
    ]
    assert "b.jpg" not in names and len(names) == 5


@pytest.mark.parametrize(
    ("fmt", "setup", "error"),
    [
        ("yolo", lambda root: None, "data.yaml is missing"),
        ("yolo", lambda root: (root / "data.yaml").write_text("names: 3"), "must list the classes"),
        ("coco", lambda root: None, "not a COCO dataset"),
        ("cvat", lambda root: None, "not a CVAT"),
        ("voc", lambda root: None, "not a Pascal VOC"),
    ],
)
def test_readers_refuse_what_is_not_their_format(
    tmp_path: Path, fmt: str, setup: object, error: str
) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(DatasetError, match=error):
        read_dataset(fmt, tmp_path)  # type: ignore[arg-type]


def test_yolo_reader_refuses_a_bad_line_and_a_folder_outside(tmp_path: Path) -> None:
    root = write(tmp_path, "yolo")
    label = next(p for p in root.glob("labels/train/*.txt") if p.read_text())
    label.write_text("0 0.5 0.5\n")
    with pytest.raises(DatasetError, match="want `class cx cy w h`"):
        read_dataset("yolo", root)
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="no class 7"):
        read_dataset("yolo", root)
    (root / "data.yaml").write_text('{"train": "../..", "val": "images/val", "names": ["a"]}')
    with pytest.raises(DatasetError, match="outside the dataset"):
        read_dataset("yolo", root)


def test_coco_reader_refuses_a_missing_image_and_traversal(tmp_path: Path) -> None:
    root = write(tmp_path, "coco")
    instances = root / "annotations" / "instances_default.json"
    document = json.loads(instances.read_text())
    document["images"][0]["file_name"] = "gone.jpg"
    instances.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="not under images/"):
        read_dataset("coco", root)
    document["images"][0]["file_name"] = "../../../etc/passwd"
    instances.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="outside the dataset"):
        read_dataset("coco", root)


def test_two_images_of_one_name_are_refused(tmp_path: Path) -> None:
    root = write(tmp_path, "coco")
    instances = root / "annotations" / "instances_default.json"
    document = json.loads(instances.read_text())
    document["images"][1]["file_name"] = document["images"][0]["file_name"]
    instances.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match="two images are named"):
        read_dataset("coco", root)


def test_import_clips_boxes_to_the_image_and_drops_those_outside() -> None:
    item = Item(
        "x.png",
        100,
        50,
        (
            Box("car", -10, 5, 30, 10),
            Box("car", 90, 40, 20, 20),
            Box("car", 120, 0, 5, 5),
            Box("car", 10, 10, 5, 5),
        ),
    )
    boxes, clipped, dropped = fit_boxes(item)
    assert (clipped, dropped) == (2, 1)
    assert boxes[0] == {"label": "car", "x": 0.0, "y": 5.0, "w": 20.0, "h": 10.0}
    assert boxes[1] == {"label": "car", "x": 90.0, "y": 40.0, "w": 10.0, "h": 10.0}


def test_import_submits_within_the_routes_bounds() -> None:
    labels = {f"f{i}": [{"label": "a"}] * (900 if i < 6 else 1) for i in range(1200)}
    bodies = list(submissions(list(labels), labels))
    assert all(len(body) <= 500 for body in bodies)
    assert all(sum(len(f["boxes"]) for f in body) <= 4000 for body in bodies)
    assert [f["frame"] for body in bodies for f in body] == list(labels)
    assert list(submissions(["zzz"], labels)) == []


def test_import_leaves_out_frames_an_export_holds_only_for_predictions(tmp_path: Path) -> None:
    root = write(tmp_path, "coco")
    (root / "labelloop.json").write_text(json.dumps({"unlabeled": ["unlabeled.jpg"]}))
    dataset = read_dataset("coco", root)
    assert "unlabeled.jpg" in {item.name for item in dataset.items}
    assert "unlabeled.jpg" not in {item.name for item in labeled_items(dataset, root)}
