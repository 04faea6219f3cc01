"""Training curves for the dashboard: each run's epochs, from its ``training.started`` events,
drawn as small SVG line charts (no script, no front-end build: the page is served as is).

A run reports every finished epoch with its losses and validation figures; a resumed run goes on
counting where its checkpoint stopped, and a repeated epoch (a retry after a crash) keeps the
newest figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.events import EpochMetrics, TrainingStarted


@dataclass(frozen=True)
class ChartBox:
    """One chart's size in SVG user units (the page scales it to its column) and the margins
    around its plot, where the axis labels go."""

    width: int = 480
    height: int = 160
    left: int = 30
    right: int = 8
    top: int = 8
    bottom: int = 20


BOX = ChartBox()

LOSSES = ("box_loss", "cls_loss", "dfl_loss")
VALIDATION = ("precision", "recall", "map50", "map50_95")
NAMES = {
    "box_loss": "box",
    "cls_loss": "cls",
    "dfl_loss": "dfl",
    "precision": "precision",
    "recall": "recall",
    "map50": "mAP50",
    "map50_95": "mAP50-95",
}


@dataclass(frozen=True)
class Line:
    """One series, ready to draw: its name, CSS class and the polyline's points."""

    name: str
    css: str
    points: str
    last: float


@dataclass(frozen=True)
class Chart:
    """One chart: its series, the y axis' top label and the epochs it spans."""

    title: str
    lines: list[Line]
    y_top: float
    epochs: int


@dataclass(frozen=True)
class RunCurves:
    """A training run's two charts (losses; validation) over its epochs."""

    version: int
    run_id: str
    device: str
    epochs_done: int
    epochs: int
    loss: Chart
    validation: Chart


def _series(by_epoch: dict[int, EpochMetrics], field: str) -> list[tuple[int, float]]:
    return [(epoch, float(getattr(figures, field))) for epoch, figures in sorted(by_epoch.items())]


def _chart(
    title: str, by_epoch: dict[int, EpochMetrics], fields: Sequence[str], epochs: int, top: float
) -> Chart:
    """Lines of ``fields`` over epochs 1..``epochs``, the y axis from 0 to ``top``."""
    inner_w, inner_h = BOX.width - BOX.left - BOX.right, BOX.height - BOX.top - BOX.bottom
    span = max(epochs - 1, 1)
    lines = []
    for field in fields:
        series = _series(by_epoch, field)
        points = " ".join(
            f"{BOX.left + inner_w * (epoch - 1) / span:.1f},"
            f"{BOX.top + inner_h * (1 - min(value, top) / top):.1f}"
            for epoch, value in series
        )
        lines.append(Line(NAMES[field], field.replace("_", "-"), points, series[-1][1]))
    return Chart(title, lines, top, epochs)


def training_curves(events: Iterable[dict[str, Any]], *, newest: int = 5) -> list[RunCurves]:
    """The curves of the ``newest`` runs that reported figures, newest version first.

    ``events`` are timeline documents (any order, any type): only ``training.started`` ones
    with figures are read.
    """
    runs: dict[tuple[int, str], dict[int, EpochMetrics]] = {}
    planned: dict[tuple[int, str], tuple[int, str]] = {}
    for document in events:
        if document.get("type") != TrainingStarted.event_type():
            continue
        data = TrainingStarted.model_validate(document).data
        if data.metrics is None:
            continue
        key = (data.version, data.run_id)
        runs.setdefault(key, {})[data.epoch] = data.metrics
        planned[key] = (data.epochs, data.device)
    curves = []
    for key in sorted(runs, reverse=True)[:newest]:
        by_epoch = runs[key]
        epochs, device = planned[key]
        span = max(epochs, *by_epoch)
        loss_top = max(max(getattr(f, name) for name in LOSSES) for f in by_epoch.values())
        curves.append(
            RunCurves(
                version=key[0],
                run_id=key[1],
                device=device,
                epochs_done=max(by_epoch),
                epochs=epochs,
                loss=_chart("training loss", by_epoch, LOSSES, span, _nice(loss_top)),
                validation=_chart("validation", by_epoch, VALIDATION, span, 1.0),
            )
        )
    return curves


def _nice(value: float) -> float:
    """A round axis top at or above ``value``: 1, 2 or 5 times a power of ten."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if value <= step * power)
