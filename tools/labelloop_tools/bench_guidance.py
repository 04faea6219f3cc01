"""Benchmarks of the model's advice: a learning curve (labeling by ``next-frames`` against at
random) and label QA on injected errors.

Both use the code the services run: the trainer's dataset writer, training and ONNX export, and
labeler-assist's onnxruntime detector (down to the score floor) and its rules
(:mod:`labeler_assist.quality`), on synthetic tasks with easy and hard frames, three seeds.
They run without the stack: what is measured is how good the advice is, not the transport
(``tests/integration/test_ml_loop.py`` drives the same rules through the services).
"""

from __future__ import annotations

import io
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from labelloop.config import Settings
from labelloop.datasets import Box as TruthBox
from labelloop_tools.plots import pyplot, save
from labelloop_tools.synthetic import synthetic_frame

SEEDS = (1, 2, 3)
LABELS = ("box", "tag")
SIZE = (192, 144)
HARD_EVERY = 3
"""One frame in this many is hard (small, dim boxes)."""
POOL, TEST = 120, 40
FIRST_LABELS, ROUND_LABELS, MAX_LABELS = 24, 8, 80
"""The first model comes after a label threshold's worth of labels, at random (as the loop's
first crossing); then each round adds the next frames and warm-starts the model."""
FIRST_EPOCHS, ROUND_EPOCHS = 40, 15
TARGET_RECALL = 0.9
QA_TRAIN, QA_EPOCHS, QA_CHECKED, QA_ERROR_SHARE = 96, 40, 200, 0.10
KINDS = ("missing", "spurious", "misplaced", "wrong_label")


@dataclass(frozen=True)
class Frame:
    name: str
    image: bytes
    truth: tuple[TruthBox, ...]
    hard: bool


def make_frames(prefix: str, seeds: Sequence[int], labels: tuple[str, ...]) -> list[Frame]:
    """Synthetic JPEG frames, every :data:`HARD_EVERY`-th one hard."""
    frames = []
    for index, seed in enumerate(seeds):
        hard = index % HARD_EVERY == 0
        image, boxes = synthetic_frame(seed, SIZE, hard=hard, labels=labels)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        frames.append(Frame(f"{prefix}_{seed}.jpg", buffer.getvalue(), tuple(boxes), hard))
    return frames


class Trainer:
    """Trains, exports and loads models as the trainer and labeler-assist do."""

    def __init__(self, settings: Settings, workdir: Path, labels: tuple[str, ...]) -> None:
        self.settings, self.workdir, self.labels = settings, workdir, labels
        self.runs = 0

    def train(self, frames: list[Frame], base: Path | None, epochs: int) -> Path:
        from trainer import training
        from trainer.dataset import LabeledFrame, write_dataset

        self.runs += 1
        root = self.workdir / f"run-{self.runs}"
        dataset = write_dataset(
            root / "data",
            [
                LabeledFrame(
                    f.name,
                    f.image,
                    SIZE[0],
                    SIZE[1],
                    [(b.label, b.x, b.y, b.w, b.h) for b in f.truth],
                )
                for f in frames
            ],
            list(self.labels),
        )
        outcome = training.train(
            dataset,
            base_weights=base,
            out_dir=root / "train",
            epochs=epochs,
            imgsz=self.settings.model_imgsz,
            seed=0,
            device="cpu",
        )
        return outcome.weights

    def detector(self, weights: Path) -> Any:
        from labeler_assist.detectors import OnnxRuntimeDetector
        from trainer import training

        onnx = training.export_onnx(weights, imgsz=self.settings.model_imgsz)
        s = self.settings
        return OnnxRuntimeDetector(
            onnx.read_bytes(), imgsz=s.model_imgsz, conf=s.assist_score_floor, iou=s.serve_iou
        )


def detect(detector: Any, frames: list[Frame], labels: tuple[str, ...]) -> dict[str, list[Any]]:
    """Each frame's boxes (``quality.Box``, class names), down to the score floor."""
    from labeler_assist.quality import Box

    found = detector.detect([f.image for f in frames])
    return {
        f.name: [Box(labels[d.label], d.x, d.y, d.w, d.h, d.score) for d in boxes]
        for f, boxes in zip(frames, found, strict=True)
    }


def recall(found: dict[str, list[Any]], frames: list[Frame], conf: float) -> float:
    """Share of true boxes a detection of the same class at ``conf`` covers at IoU >= 0.5."""
    from labeler_assist.quality import Box, iou

    hit = total = 0
    for frame in frames:
        shown = [d for d in found[frame.name] if d.score >= conf]
        used: set[int] = set()
        for truth in frame.truth:
            box = Box(truth.label, truth.x, truth.y, truth.w, truth.h)
            total += 1
            match = next(
                (
                    i
                    for i, d in enumerate(shown)
                    if i not in used and d.label == box.label and iou(d, box) >= 0.5
                ),
                None,
            )
            if match is not None:
                used.add(match)
                hit += 1
    return hit / total if total else 1.0


# --- the learning curve ----------------------------------------------------------------------


def _curve(
    trainer: Trainer,
    pool: list[Frame],
    test: list[Frame],
    start: tuple[list[Frame], Path],
    strategy: str,
    rng: random.Random,
    console: Console,
) -> list[dict[str, Any]]:
    """Label in rounds by ``strategy`` from ``start`` (the first labels and the model they
    trained); (labels, test recall) after each round."""
    from labeler_assist.quality import frame_uncertainty, rank_frames

    s = trainer.settings
    labeled, weights = list(start[0]), start[1]
    points = []
    while True:
        detector = trainer.detector(weights)
        achieved = recall(detect(detector, test, trainer.labels), test, s.serve_conf)
        hard = sum(f.hard for f in labeled)
        points.append({"labels": len(labeled), "recall": round(achieved, 3), "hard": hard})
        console.log(f"{strategy}: {len(labeled)} labels ({hard} hard) -> recall {achieved:.3f}")
        if achieved >= TARGET_RECALL or len(labeled) >= MAX_LABELS:
            return points
        chosen = {f.name for f in labeled}
        rest = [f for f in pool if f.name not in chosen]
        if strategy == "random":
            picked = rng.sample(rest, min(ROUND_LABELS, len(rest)))
        else:
            found = detect(detector, rest, trainer.labels)
            scores: dict[str, float | None] = {
                name: frame_uncertainty((d.score for d in boxes), s.serve_conf)
                for name, boxes in found.items()
            }
            top = {name for name, _ in rank_frames([f.name for f in rest], scores)[:ROUND_LABELS]}
            picked = [f for f in rest if f.name in top]
        labeled += picked
        weights = trainer.train(labeled, weights, ROUND_EPOCHS)


def plot_curves(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """Test recall against labels, each seed's two curves, as an SVG; None without
    matplotlib (it comes with the trainer's extra)."""
    plt = pyplot()
    if plt is None:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    for run, colour in zip(runs, ("tab:blue", "tab:orange", "tab:green"), strict=False):
        for strategy, style in (("next-frames", "o-"), ("random", "s--")):
            points = run["curves"][strategy]
            axes.plot(
                [p["labels"] for p in points],
                [p["recall"] for p in points],
                style,
                color=colour,
                label=f"seed {run['seed']}: {strategy}",
            )
    axes.axhline(TARGET_RECALL, color="grey", linewidth=0.8, linestyle=":")
    axes.set(xlabel="labeled frames", ylabel="recall on held-out frames", ylim=(0, 1))
    axes.legend(fontsize="small", ncol=2)
    figure.suptitle("labeling by next-frames against at random (synthetic, 1 in 3 frames hard)")
    return save(plt, figure, path)


def labels_to_reach(points: list[dict[str, Any]]) -> int | None:
    """Labels at the first point reaching the target recall (None: not within the budget)."""
    return next((p["labels"] for p in points if p["recall"] >= TARGET_RECALL), None)


def bench_active_learning(settings: Settings, console: Console) -> dict[str, Any]:
    """Labels needed to reach recall 0.9 at the serving confidence: next-frames vs random."""
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="labelloop-al-") as folder:
        for seed in SEEDS:
            base = seed * 100_000
            pool = make_frames("pool", range(base, base + POOL), ("box",))
            test = make_frames("test", range(base + 50_000, base + 50_000 + TEST), ("box",))
            first = random.Random(seed).sample(pool, FIRST_LABELS)
            start = (
                first,
                Trainer(settings, Path(folder) / f"{seed}", ("box",)).train(
                    first, None, FIRST_EPOCHS
                ),
            )  # both strategies start from the same first model
            curves = {}
            for strategy in ("next-frames", "random"):
                workdir = Path(folder) / f"{seed}-{strategy}"
                trainer = Trainer(settings, workdir, ("box",))
                curves[strategy] = _curve(
                    trainer, pool, test, start, strategy, random.Random(seed), console
                )
                shutil.rmtree(workdir, ignore_errors=True)
            runs.append({"seed": seed, "curves": curves})
    needed = {
        strategy: [labels_to_reach(run["curves"][strategy]) for run in runs]
        for strategy in ("next-frames", "random")
    }
    ratio = None
    ours, theirs = needed["next-frames"], needed["random"]
    if None not in ours and None not in theirs:
        ratio = round(sum(n or 0 for n in ours) / sum(n or 0 for n in theirs), 3)
    figure = plot_curves(runs, settings.var_dir / "learning-curve.svg")
    return {
        "plot": str(figure) if figure else None,
        "task": f"{POOL} pool / {TEST} test frames, 1 in {HARD_EVERY} hard; first "
        f"{FIRST_LABELS} labels at random, then {ROUND_LABELS} a round; {FIRST_EPOCHS} epochs, "
        f"{ROUND_EPOCHS} warm a round; recall at serve_conf {settings.serve_conf}, IoU 0.5",
        "target_recall": TARGET_RECALL,
        "max_labels": MAX_LABELS,
        "labels_to_target": needed,
        "next_frames_over_random": ratio,
        "goal_ratio": 0.7,
        "runs": runs,
    }


# --- label QA on injected errors ---------------------------------------------------------------


@dataclass(frozen=True)
class Injected:
    frame: str
    kind: str
    box: TruthBox


def inject(frame: Frame, kind: str, rng: random.Random) -> tuple[Frame, Injected] | None:
    """The frame with one error of ``kind`` in its labels, and where (None if impossible)."""
    boxes = list(frame.truth)
    if not boxes:
        return None
    index = rng.randrange(len(boxes))
    box = boxes[index]
    if kind == "missing":
        del boxes[index]
        return replace(frame, truth=tuple(boxes)), Injected(frame.name, kind, box)
    if kind == "wrong_label":
        other = next(label for label in LABELS if label != box.label)
        boxes[index] = replace(box, label=other)
        return replace(frame, truth=tuple(boxes)), Injected(frame.name, kind, boxes[index])
    if kind == "misplaced":
        dx = 0.6 * box.w if box.x + 1.6 * box.w <= SIZE[0] else -0.6 * box.w
        boxes[index] = replace(box, x=max(0.0, box.x + dx))
        return replace(frame, truth=tuple(boxes)), Injected(frame.name, kind, boxes[index])
    for _ in range(50):  # spurious: a box on background
        w, h = rng.randint(16, 40), rng.randint(14, 32)
        x, y = rng.randint(0, SIZE[0] - w - 1), rng.randint(0, SIZE[1] - h - 1)
        added = TruthBox(rng.choice(LABELS), float(x), float(y), float(w), float(h))
        if all(not _touches(added, b) for b in boxes):
            boxes.append(added)
            return replace(frame, truth=tuple(boxes)), Injected(frame.name, kind, added)
    return None


def _touches(a: TruthBox, b: TruthBox) -> bool:
    return not (a.x + a.w < b.x or b.x + b.w < a.x or a.y + a.h < b.y or b.y + b.h < a.y)


def bench_label_qa(settings: Settings, console: Console) -> dict[str, Any]:
    """Precision and recall of ``label-issues`` per kind on 10 % of frames with an error."""
    from labeler_assist.quality import Box, find_issues, iou

    hits = {kind: 0 for kind in KINDS}
    reported = {kind: 0 for kind in KINDS}
    injected_count = {kind: 0 for kind in KINDS}
    with tempfile.TemporaryDirectory(prefix="labelloop-qa-") as folder:
        for seed in SEEDS:
            base = seed * 100_000 + 70_000
            rng = random.Random(seed)
            trainer = Trainer(settings, Path(folder) / str(seed), LABELS)
            train = make_frames("train", range(base, base + QA_TRAIN), LABELS)
            weights = trainer.train(train, None, QA_EPOCHS)
            checked = make_frames("check", range(base + 1000, base + 1000 + QA_CHECKED), LABELS)
            errors: list[Injected] = []
            picks = rng.sample(range(len(checked)), int(QA_CHECKED * QA_ERROR_SHARE))
            for n, index in enumerate(picks):
                made = inject(checked[index], KINDS[n % len(KINDS)], rng)
                if made is not None:
                    checked[index], error = made
                    errors.append(error)
            found = detect(trainer.detector(weights), checked, LABELS)
            issues = [
                issue
                for frame in checked
                for issue in find_issues(
                    frame.name,
                    [Box(b.label, b.x, b.y, b.w, b.h) for b in frame.truth],
                    found[frame.name],
                    settings.assist_issue_conf,
                )
            ]
            for error in errors:
                injected_count[error.kind] += 1
            matched: set[int] = set()
            for issue in issues:
                reported[issue.kind] += 1
                box = Box(issue.box.label, issue.box.x, issue.box.y, issue.box.w, issue.box.h)
                for n, error in enumerate(errors):
                    target = Box(
                        error.box.label, error.box.x, error.box.y, error.box.w, error.box.h
                    )
                    if (
                        n not in matched
                        and error.frame == issue.frame
                        and error.kind == issue.kind
                        and iou(box, target) >= 0.5
                    ):
                        matched.add(n)
                        hits[issue.kind] += 1
                        break
            console.log(f"label QA seed {seed}: {len(errors)} errors, {len(issues)} issues")
    per_kind = {
        kind: {
            "injected": injected_count[kind],
            "reported": reported[kind],
            "found": hits[kind],
            "precision": round(hits[kind] / reported[kind], 3) if reported[kind] else None,
            "recall": round(hits[kind] / injected_count[kind], 3) if injected_count[kind] else None,
        }
        for kind in KINDS
    }
    return {
        "task": f"{QA_TRAIN} clean labeled frames train the model ({QA_EPOCHS} epochs); "
        f"{QA_CHECKED} further frames "
        f"(1 in {HARD_EVERY} hard, classes {list(LABELS)}) are checked, "
        f"{QA_ERROR_SHARE:.0%} with one injected error, kinds in turn; seeds {list(SEEDS)}",
        "issue_conf": settings.assist_issue_conf,
        "per_kind": per_kind,
        "goal": ">= 0.7 precision and recall for missing and spurious",
    }
