"""What the model says about labeling, as pure rules: which frames to label next, which labels
look wrong.

**What to label next.** A frame's score is the larger of two doubts: the least confidence of
its best box (1 minus its score; 1 when the model finds nothing down to the floor), and the
ambiguity of its most ambiguous box. A box's ambiguity is a Gaussian bump on its distance from
the serving threshold, half the threshold wide (1 at the threshold, where pre-annotation shows
it or not; 0.28 at the score floor with the defaults; ~0 for a box the model is sure of), so
the faint candidates every early model finds on background do not outrank a real doubt. The
first term ranks frames on which the model sees nothing, or nothing it would show, first: a
young model misses whole kinds of objects outright (on the benchmark's hard frames, every
candidate of one seed's first model was under 0.02), and those frames teach it most. Its known
cost: frames that are truly empty rank high too until the model is sure of them. Before any
model, frames come in
**spread** order: evenly over the task's frame order, halving the gaps (positions 0, 1/2, 1/4,
3/4, ...), so the first labels cover the whole sequence instead of its first scenes.

**Which labels look wrong.** A model's boxes (down to the score floor) are matched to a
frame's labels one to one by IoU regardless of class, best first, at IoU >= 0.5. Then, with
``confident`` the least score that counts as the model being sure:

- a matched pair of different classes, the detection confident: ``wrong_label``;
- an unmatched label whose best overlapping same-class detection is confident but under IoU
  0.5: ``misplaced``;
- an unmatched label that no detection touches at all, not even a faint one down to the
  floor: ``spurious`` (a model that misses a hard object usually still finds a faint
  candidate on it; background gives none);
- an unmatched confident detection that touches no label: ``missing``.

Only a model that never trained on the frame may judge it: one scored on its own training
labels agrees with their mistakes (the caller picks the frames).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.events import IssueKind, LabeledBox, LabelIssue

MATCH_IOU = 0.5
"""A detection and a label overlapping at least this much are the same object."""
TOUCH_IOU = 0.1
"""Overlap below this is no overlap: the detection is elsewhere."""
MAX_ISSUES_PER_FRAME = 10
"""A frame's most likely issues kept; a frame with more needs relabeling as a whole anyway."""


@dataclass(frozen=True)
class Box:
    """A box in pixels (``x``/``y`` the top-left corner) with its class name; ``score`` is the
    model's confidence, 1 for a human label."""

    label: str
    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    @classmethod
    def of(cls, box: Mapping[str, Any]) -> Box:
        """A box from its API or event shape (``score`` optional)."""
        return cls(
            str(box["label"]),
            float(box["x"]),
            float(box["y"]),
            float(box["w"]),
            float(box["h"]),
            float(box.get("score", 1.0)),
        )

    def labeled(self) -> LabeledBox:
        return LabeledBox(label=self.label, x=self.x, y=self.y, w=self.w, h=self.h)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 for boxes that do not meet)."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a.w * a.h + b.w * b.h - inter)


# --- what to label next --------------------------------------------------------------------


def ambiguity(score: float, threshold: float) -> float:
    """How unsure a box of confidence ``score`` leaves the model (1 at ``threshold``)."""
    z = (score - threshold) / (threshold / 2)
    return math.exp(-z * z / 2)


def frame_uncertainty(scores: Iterable[float], threshold: float) -> float:
    """A frame's score for labeling next: 1 minus its best box's score, or its most ambiguous
    box's ambiguity, whichever is larger (1 with no box)."""
    found = list(scores)
    doubt = 1 - max(found, default=0.0)
    return round(max([doubt, *(ambiguity(score, threshold) for score in found)]), 4)


def spread_order(frames: Sequence[str]) -> list[tuple[str, float]]:
    """``frames`` (in the task's order) evenly spread: each next frame halves a gap left by
    those before it. The score falls from 1 with the rank, so the order reads off it."""
    count = len(frames)
    if count == 0:
        return []
    slots = 1 << max(count - 1, 0).bit_length()  # each frame its own slot of a power of two
    keys = [(_van_der_corput(index * slots // count), index) for index in range(count)]
    order = [index for _, index in sorted(keys)]
    return [(frames[index], round(1 - rank / count, 4)) for rank, index in enumerate(order)]


def _van_der_corput(n: int) -> float:
    """The ``n``-th point of the base-2 van der Corput sequence (0, 1/2, 1/4, 3/4, ...)."""
    value, denominator = 0.0, 1.0
    while n:
        denominator *= 2
        n, bit = divmod(n, 2)
        value += bit / denominator
    return value


def rank_frames(
    unlabeled: Sequence[str], scores: Mapping[str, float | None]
) -> list[tuple[str, float]]:
    """Frames nobody labeled, most informative first: those the model scored by score (then
    name), then those it has not scored yet in spread order."""
    scored = [(name, score) for name in unlabeled if (score := scores.get(name)) is not None]
    scored.sort(key=lambda item: (-item[1], item[0]))
    rest = spread_order([name for name in unlabeled if scores.get(name) is None])
    return scored + rest


# --- which labels look wrong ---------------------------------------------------------------


def labels_fingerprint(boxes: Iterable[Mapping[str, Any]]) -> str:
    """A short hash of a frame's labels as checked: a check of other labels is stale."""
    canonical = [
        [box["label"], *(round(float(box[key]), 2) for key in ("x", "y", "w", "h"))]
        for box in boxes
    ]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def find_issues(
    frame: str, labels: Sequence[Box], detections: Sequence[Box], confident: float
) -> list[LabelIssue]:
    """Where ``detections`` (a model's boxes on ``frame``, which it did not train on)
    confidently disagree with the frame's ``labels``; most likely first."""
    pairs = sorted(
        (
            (overlap, li, di)
            for li, label in enumerate(labels)
            for di, found in enumerate(detections)
            if (overlap := iou(label, found)) >= MATCH_IOU
        ),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    matched: dict[int, int] = {}
    used: set[int] = set()
    for _, li, di in pairs:
        if li not in matched and di not in used:
            matched[li] = di
            used.add(di)
    issues: list[LabelIssue] = []

    def add(kind: IssueKind, box: Box, score: float, suggested: str | None = None) -> None:
        issues.append(
            LabelIssue(
                frame=frame,
                kind=kind,
                box=box.labeled(),
                suggested=suggested,
                score=round(min(max(score, 0.0), 1.0), 4),
            )
        )

    for li, label in enumerate(labels):
        if li in matched:
            found = detections[matched[li]]
            if found.label != label.label and found.score >= confident:
                add("wrong_label", label, found.score, suggested=found.label)
            continue
        touching = [di for di, d in enumerate(detections) if iou(label, d) >= TOUCH_IOU]
        near = [
            di
            for di in touching
            if detections[di].label == label.label and detections[di].score >= confident
        ]
        if near:
            add("misplaced", label, max(detections[di].score for di in near))
            used.update(near)
            continue
        if not touching:  # not even a faint candidate down to the floor: nothing is there
            overlap = max((iou(label, d) * d.score for d in detections), default=0.0)
            add("spurious", label, 1 - overlap)
    for di, found in enumerate(detections):
        if di in used or found.score < confident:
            continue
        if any(iou(found, label) >= TOUCH_IOU for label in labels):
            continue
        add("missing", found, found.score)
    issues.sort(key=lambda issue: (-issue.score, issue.kind))
    return issues[:MAX_ISSUES_PER_FRAME]
