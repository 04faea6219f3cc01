"""The model registry: ``models/<task_id>/<version>/`` in the object store, one task per prefix.

A version holds ``model.onnx`` (served), ``model.pt`` (warm start of the next run),
``metrics.json`` and ``run.json`` (hyperparameters, seed, dataset hash, code version, device,
duration). Tasks never share a prefix, so they never share a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labelloop.storage import ObjectStore


def version_prefix(task_id: str, version: int) -> str:
    return f"models/{task_id}/{version}/"


def onnx_key(task_id: str, version: int) -> str:
    return version_prefix(task_id, version) + "model.onnx"


def checkpoint_key(task_id: str, run_id: str) -> str:
    """Where a preempted run's last epoch waits to be resumed (any trainer pod can resume it)."""
    return f"checkpoints/{task_id}/{run_id}/last.pt"


def register(
    store: ObjectStore,
    task_id: str,
    version: int,
    *,
    metrics: dict[str, Any],
    run: dict[str, Any],
    onnx: Path | None = None,
    weights: Path | None = None,
) -> None:
    """Upload a version's files; the ONNX and weights only for a published version."""
    prefix = version_prefix(task_id, version)
    if onnx is not None:
        store.put_bytes(prefix + "model.onnx", onnx.read_bytes())
    if weights is not None:
        store.put_bytes(prefix + "model.pt", weights.read_bytes())
    store.put_bytes(
        prefix + "metrics.json",
        json.dumps(metrics, indent=2).encode(),
        content_type="application/json",
    )
    store.put_bytes(
        prefix + "run.json",
        json.dumps(run, indent=2, default=str).encode(),
        content_type="application/json",
    )


def fetch_weights(store: ObjectStore, task_id: str, version: int, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(store.get_bytes(version_prefix(task_id, version) + "model.pt"))
    return target
