"""The rules of what to label next and which labels look wrong (labeler_assist.quality)."""

from __future__ import annotations

import pytest

from labeler_assist.quality import (
    Box,
    ambiguity,
    find_issues,
    frame_uncertainty,
    iou,
    labels_fingerprint,
    rank_frames,
    spread_order,
)

CONFIDENT = 0.5


def label(x: float, y: float, w: float = 20, h: float = 20, name: str = "box") -> Box:
    return Box(name, x, y, w, h)


def found(x: float, y: float, score: float, w: float = 20, h: float = 20, name: str = "box") -> Box:
    return Box(name, x, y, w, h, score)


def kinds(labels: list[Box], detections: list[Box]) -> list[str]:
    return [issue.kind for issue in find_issues("f.jpg", labels, detections, CONFIDENT)]


def test_iou_of_boxes_that_meet_and_that_do_not() -> None:
    assert iou(label(0, 0), label(0, 0)) == pytest.approx(1.0)
    assert iou(label(0, 0), label(10, 0)) == pytest.approx(200 / 600)
    assert iou(label(0, 0), label(20, 0)) == 0.0


def test_a_box_at_the_threshold_is_the_most_ambiguous_and_a_sure_one_the_least() -> None:
    assert ambiguity(0.25, 0.25) == pytest.approx(1.0)
    assert ambiguity(0.05, 0.25) < ambiguity(0.15, 0.25) < ambiguity(0.25, 0.25)
    assert ambiguity(0.9, 0.25) < 0.01
    assert frame_uncertainty([], 0.25) == 1.0, "the model sees nothing there"
    assert frame_uncertainty([0.95, 0.3], 0.25) == pytest.approx(ambiguity(0.3, 0.25), abs=1e-4)
    assert frame_uncertainty([0.95], 0.25) == pytest.approx(0.05), "sure of its only box"
    assert frame_uncertainty([0.1], 0.25) == pytest.approx(0.9), "nothing it would show"


def test_spread_order_halves_the_gaps() -> None:
    frames = [f"{i:02d}" for i in range(8)]
    order = [name for name, _ in spread_order(frames)]
    assert order == ["00", "04", "02", "06", "01", "05", "03", "07"]
    scores = [score for _, score in spread_order(frames)]
    assert scores == sorted(scores, reverse=True)
    assert spread_order([]) == []


def test_scored_frames_come_first_by_score_then_the_rest_spread() -> None:
    ranked = rank_frames(["a", "b", "c", "d", "e"], {"b": 0.2, "d": 0.9, "e": None})
    assert [name for name, _ in ranked[:2]] == ["d", "b"]
    assert sorted(name for name, _ in ranked[2:]) == ["a", "c", "e"]


def test_labels_the_model_agrees_with_have_no_issue() -> None:
    assert kinds([label(10, 10), label(60, 60)], [found(11, 10, 0.9), found(60, 61, 0.8)]) == []


def test_a_confident_detection_no_label_matches_is_missing() -> None:
    issues = find_issues("f.jpg", [label(10, 10)], [found(10, 10, 0.9), found(80, 80, 0.7)], 0.5)
    assert [(i.kind, i.box.x, i.score) for i in issues] == [("missing", 80.0, 0.7)]


def test_a_faint_detection_is_not_missing_a_label() -> None:
    assert kinds([], [found(80, 80, 0.3)]) == []


def test_a_label_no_detection_supports_is_spurious() -> None:
    issues = find_issues("f.jpg", [label(10, 10)], [], CONFIDENT)
    assert [(i.kind, i.score) for i in issues] == [("spurious", 1.0)]
    assert kinds([label(10, 10)], [found(14, 10, 0.3)]) == [], "a faint candidate on it"


def test_a_label_with_a_faint_detection_on_it_is_supported() -> None:
    # matched at IoU >= 0.5 by a detection down to the floor: the model saw something there
    assert kinds([label(10, 10)], [found(10, 10, 0.08)]) == []


def test_a_label_beside_a_confident_detection_is_misplaced() -> None:
    issues = find_issues("f.jpg", [label(10, 10)], [found(22, 10, 0.9)], CONFIDENT)
    assert [(i.kind, i.box.x) for i in issues] == [("misplaced", 10.0)]


def test_a_confident_detection_of_another_class_is_a_wrong_label() -> None:
    issues = find_issues("f.jpg", [label(10, 10)], [found(10, 10, 0.8, name="tag")], CONFIDENT)
    assert [(i.kind, i.suggested) for i in issues] == [("wrong_label", "tag")]
    assert kinds([label(10, 10)], [found(10, 10, 0.3, name="tag")]) == []


def test_issues_come_most_likely_first() -> None:
    issues = find_issues(
        "f.jpg",
        [label(10, 10), label(100, 100)],
        [found(100, 100, 0.6, name="tag"), found(200, 10, 0.95)],
        CONFIDENT,
    )
    assert [i.kind for i in issues] == ["spurious", "missing", "wrong_label"]
    assert [i.score for i in issues] == sorted((i.score for i in issues), reverse=True)


def test_a_fingerprint_changes_with_the_labels() -> None:
    boxes = [{"label": "box", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}]
    assert labels_fingerprint(boxes) == labels_fingerprint([dict(boxes[0])])
    assert labels_fingerprint(boxes) != labels_fingerprint([{**boxes[0], "x": 1.5}])
    assert len(labels_fingerprint([])) == 16
