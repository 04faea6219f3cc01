"""An epoch's figures as the trainer reads them from Ultralytics' trainer, and what it does with
figures it cannot plot (the real training is in tests/training/test_training.py)."""

from __future__ import annotations

from types import SimpleNamespace

from trainer.training import epoch_metrics

VALIDATION = {
    "metrics/precision(B)": 0.8,
    "metrics/recall(B)": 0.7,
    "metrics/mAP50(B)": 0.75,
    "metrics/mAP50-95(B)": 0.4,
    "val/box_loss": 1.2,
}


def test_an_epochs_losses_and_validation_are_read() -> None:
    by_name = {"dfl_loss": 1.1, "box_loss": 1.5, "cls_loss": 2.0}  # Ultralytics 8.4
    figures = epoch_metrics(SimpleNamespace(tloss=by_name, metrics=VALIDATION))
    assert figures is not None
    assert (figures.box_loss, figures.cls_loss, figures.dfl_loss) == (1.5, 2.0, 1.1)
    in_order = epoch_metrics(SimpleNamespace(tloss=[1.5, 2.0, 1.1], metrics=VALIDATION))
    assert in_order == figures
    assert (figures.precision, figures.recall, figures.map50, figures.map50_95) == (
        0.8,
        0.7,
        0.75,
        0.4,
    )


def test_figures_that_cannot_be_plotted_are_left_out_not_raised() -> None:
    nan = float("nan")
    assert epoch_metrics(SimpleNamespace(tloss=[nan, 2.0, 1.1], metrics=VALIDATION)) is None
    assert epoch_metrics(SimpleNamespace(tloss=[1.0, 2.0], metrics=VALIDATION)) is None
    assert epoch_metrics(SimpleNamespace(tloss=[1.0, 2.0, 1.0], metrics={})) is None
    assert epoch_metrics(SimpleNamespace(tloss=None, metrics=VALIDATION)) is None
    assert epoch_metrics(SimpleNamespace(tloss={"box_loss": 1.0}, metrics=VALIDATION)) is None
    beyond = {**VALIDATION, "metrics/recall(B)": 1.5}
    assert epoch_metrics(SimpleNamespace(tloss=[1.0, 2.0, 1.0], metrics=beyond)) is None
