"""What trains, what is pre-annotated and what is loaded is what was checked (issue 14, items
6 and 10), on the real stack.

A frame replaced in the bucket after ingest validated it is left out of the training set and
not pre-annotated; a model file replaced after the registry wrote it is not loaded: the
trainer does not warm-start or resume from it, labeler-assist does not serve it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from labeler_assist.models import AssistFrame, Preannotation, ServedModel
from labeler_assist.preannotation import ModelServer
from labeler_assist.projections import PROJECTION
from labelloop.client import LabelloopClient
from labelloop.config import Settings
from labelloop.db import get_engine
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.messaging.outbox import Transactions
from labelloop.storage import ObjectStore
from labelloop.tasks import Task
from tests.integration.harness import ApiServer, make_frames, wait_until
from trainer.models import TrainingFrame, TrainingLabel
from trainer.registry import fetch_weights, onnx_key, register
from trainer.run import _snapshot

pytestmark = [pytest.mark.integration, pytest.mark.training]


@pytest.fixture(scope="module")
def model_files() -> tuple[Path, Path]:
    """The serving tests' small detector (trained once, cached in var/test-models)."""
    from tests.serving.conftest import load_cached, model_dir, refused_network, train

    target = model_dir()
    if (target / "model.onnx").exists():
        model = load_cached(target)
    else:
        with refused_network():
            model = train(target)
    return model.onnx, model.weights


@pytest.fixture
def api_engine(api: ApiServer) -> Iterator[Engine]:
    engine = get_engine(api.settings.database_url)
    yield engine


def in_process(api: ApiServer) -> Settings:
    """labeler-assist's settings with onnxruntime in process (Triton plays no part here)."""
    return api.settings.model_copy(update={"triton_enabled": False})


def other_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (250, 250, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def rows(engine: Engine, table: Any, task_id: str) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(table).where(col(table.task_id) == task_id)))


async def test_a_frame_replaced_after_ingest_is_not_trained_or_preannotated(
    client: LabelloopClient,
    api: ApiServer,
    api_engine: Engine,
    store: ObjectStore,
    model_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    created = client.create_task("swap", ["car"], make_frames(tmp_path / "frames", 6), timeout_s=90)
    [job] = created.jobs
    task_id, frames = job["task_id"], job["frames"]
    # the trainer and labeler-assist learn each frame's validated hash from frame.processed
    assert wait_until(lambda: len(rows(api_engine, TrainingFrame, task_id)) == 6, 60)
    assert wait_until(lambda: len(rows(api_engine, AssistFrame, task_id)) == 6, 60)
    box = {"label": "car", "x": 8, "y": 8, "w": 22, "h": 22}
    client.request(
        "PUT",
        f"/api/jobs/{job['id']}/annotations",
        json={"frames": [{"frame": name, "boxes": [box]} for name in frames[:4]]},
    )
    assert wait_until(lambda: len(rows(api_engine, TrainingLabel, task_id)) == 4, 60)

    # One labeled and one unlabeled frame are replaced through the bucket after validation.
    swapped_labeled, swapped_unlabeled = frames[0], frames[4]
    for name in (swapped_labeled, swapped_unlabeled):
        store.put_bytes(f"tasks/{task_id}/data/{name}", other_jpeg())

    # The trainer leaves the labeled one out, and says why.
    with Session(api_engine) as session:
        task = session.get(Task, task_id)
    assert task is not None
    recorded = {row.frame: row for row in rows(api_engine, TrainingFrame, task_id)}
    dataset = _snapshot(
        store,
        task,
        rows(api_engine, TrainingLabel, task_id),
        recorded,
        tmp_path / "data",
        api.settings.ingest_max_frame_bytes,
    )
    assert dataset.train_count + dataset.val_count == 3
    [(name, reason)] = dataset.skipped
    assert name == swapped_labeled and "replaced" in reason

    # labeler-assist pre-annotates the untouched unlabeled frame only.
    onnx, _ = model_files
    key = onnx_key(task_id, 1)
    store.put_bytes(key, onnx.read_bytes())
    server = ModelServer(
        in_process(api), store, Transactions(api_engine, api.settings.topic, projection=PROJECTION)
    )
    loaded = await server.load(
        task_id, 1, key, ["car"], hashlib.sha256(onnx.read_bytes()).hexdigest()
    )
    assert loaded is not None and loaded.backend == "onnxruntime"
    assert await server.preannotate(task_id, frames) == 1
    done = {row.frame for row in rows(api_engine, Preannotation, task_id)}
    assert done == {frames[5]}, "the replaced frame is not pre-annotated"


async def test_a_model_file_replaced_after_registration_is_not_loaded(
    api: ApiServer,
    api_engine: Engine,
    store: ObjectStore,
    model_files: tuple[Path, Path],
    unique: str,
    tmp_path: Path,
) -> None:
    task_id = f"hashes{unique}"
    onnx, weights = model_files
    hashes = register(store, task_id, 1, metrics={}, run={}, onnx=onnx, weights=weights)
    assert hashes.onnx_sha256 == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert hashes.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()

    # The trainer: warm start only from the registered weights.
    base = fetch_weights(store, task_id, 1, tmp_path / "base.pt", sha256=hashes.weights_sha256)
    assert base.read_bytes() == weights.read_bytes()
    store.put_bytes(f"models/{task_id}/1/model.pt", b"a pickle of someone else's")
    with pytest.raises(NotAsRecorded, match="replaced"):
        fetch_weights(store, task_id, 1, tmp_path / "evil.pt", sha256=hashes.weights_sha256)
    with pytest.raises(NotAsRecorded, match="no hash was recorded"):
        fetch_weights(store, task_id, 1, tmp_path / "old.pt", sha256=None)
    checkpoint = f"checkpoints/{task_id}/run/last.pt"
    store.put_bytes(checkpoint, b"resumable")
    assert read_verified(store, checkpoint, hashlib.sha256(b"resumable").hexdigest(), max_bytes=99)
    with pytest.raises(NotAsRecorded, match="over 4 bytes"):
        read_verified(store, checkpoint, hashlib.sha256(b"resumable").hexdigest(), max_bytes=4)

    # labeler-assist: v1 serves; v2, replaced after it was registered, is refused and v1 stays.
    server = ModelServer(
        in_process(api), store, Transactions(api_engine, api.settings.topic, projection=PROJECTION)
    )
    v1 = await server.load(task_id, 1, onnx_key(task_id, 1), ["box"], hashes.onnx_sha256)
    assert v1 is not None and v1.version == 1
    v2 = register(store, task_id, 2, metrics={}, run={}, onnx=onnx, weights=weights)
    store.put_bytes(onnx_key(task_id, 2), b"not the exported model")
    kept = await server.load(task_id, 2, onnx_key(task_id, 2), ["box"], v2.onnx_sha256)
    assert kept is v1
    with Session(api_engine) as session:
        served = session.get(ServedModel, task_id)
    assert served is not None and (served.version, served.onnx_sha256) == (1, hashes.onnx_sha256)

    # After a restart, v1's file is reloaded only if it is still the one recorded.
    store.put_bytes(onnx_key(task_id, 1), b"replaced as well")
    restarted = ModelServer(
        in_process(api), store, Transactions(api_engine, api.settings.topic, projection=PROJECTION)
    )
    assert await restarted.for_task(task_id) is None
    assert await restarted.preannotate(task_id, ["any.jpg"]) == 0
