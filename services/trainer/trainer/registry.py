"""The model registry: ``models/<task_id>/<version>/`` in the object store, one task per prefix.

A version holds ``model.onnx`` (served), ``model.pt`` (warm start of the next run),
``metrics.json`` and ``run.json`` (hyperparameters, seed, dataset hash, code version, device,
duration). Tasks never share a prefix, so they never share a model.

The sha256 of every file that is loaded again (the ONNX by labeler-assist, ``model.pt`` and
checkpoints by the trainer) is taken as it is written and travels in the event that announces
it; a reader uses the file only if its bytes still have that hash
(:func:`labelloop.integrity.read_verified`, which raises ``NotAsRecorded``), so whoever can
write to the bucket cannot make the trainer unpickle, or Triton run, a file of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop.integrity import read_verified, sha256_of
from labelloop.storage import ObjectStore

MAX_ARTIFACT_BYTES = 1024 * 1024 * 1024
"""A model file read back is at most this (yolov8x's weights are ~130 MB): a replaced file is
not read past it."""


@dataclass(frozen=True)
class Artifacts:
    """The hashes of a version's files as they were uploaded (None: not uploaded)."""

    onnx_sha256: str | None = None
    weights_sha256: str | None = None
    trained_frames_sha256: str | None = None


def version_prefix(task_id: str, version: int) -> str:
    return f"models/{task_id}/{version}/"


def onnx_key(task_id: str, version: int) -> str:
    return version_prefix(task_id, version) + "model.onnx"


def trained_frames_key(task_id: str, version: int) -> str:
    """The JSON list of the frames a published version trained on."""
    return version_prefix(task_id, version) + "trained.json"


def checkpoint_key(task_id: str, run_id: str, epochs_done: int) -> str:
    """Where a run's checkpoint after ``epochs_done`` epochs waits to be resumed from (by any
    trainer pod): one key per epoch count, so the object a row names is never overwritten."""
    return f"checkpoints/{task_id}/{run_id}/e{epochs_done:05d}.pt"


def register(
    store: ObjectStore,
    task_id: str,
    version: int,
    *,
    metrics: dict[str, Any],
    run: dict[str, Any],
    onnx: Path | None = None,
    weights: Path | None = None,
    trained_frames: tuple[str, ...] | None = None,
) -> Artifacts:
    """Upload a version's files (the ONNX, weights and trained frames only for a published
    version), and return the hashes of those that will be loaded again."""
    prefix = version_prefix(task_id, version)
    hashes: dict[str, str] = {}
    for name, path, field in (("model.onnx", onnx, "onnx"), ("model.pt", weights, "weights")):
        if path is not None:
            data = path.read_bytes()
            store.put_bytes(prefix + name, data)
            hashes[f"{field}_sha256"] = sha256_of(data)
    if trained_frames is not None:
        listing = json.dumps(list(trained_frames)).encode()
        store.put_bytes(prefix + "trained.json", listing, content_type="application/json")
        hashes["trained_frames_sha256"] = sha256_of(listing)
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
    return Artifacts(**hashes)


def fetch_weights(
    store: ObjectStore, task_id: str, version: int, target: Path, *, sha256: str | None
) -> Path:
    """A version's ``model.pt`` at ``target``, if it is the file registered (``sha256``)."""
    key = version_prefix(task_id, version) + "model.pt"
    data = read_verified(store, key, sha256, max_bytes=MAX_ARTIFACT_BYTES)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target
