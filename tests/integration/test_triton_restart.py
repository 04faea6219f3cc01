"""Triton loses a task's model (a restart empties an explicit-control server): labeler-assist
loads the version again and the pre-annotations still arrive, instead of failing the event."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from labeler_assist.models import AssistFrame, Preannotation
from labeler_assist.preannotation import ModelServer, triton_model_name
from labeler_assist.projections import PROJECTION
from labelloop.config import Settings
from labelloop.messaging.outbox import Transactions
from labelloop.stack.manager import Stack
from labelloop.storage import ObjectStore
from labelloop_tools.synthetic import synthetic_frame

pytestmark = [pytest.mark.integration, pytest.mark.training]


@pytest.fixture(scope="module")
def untrained_onnx(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A yolov8n from YAML, exported with a dynamic batch: serving needs no trained weights.

    A model built from YAML exports next to the working directory, so the export runs inside a
    temporary folder: otherwise a `yolov8n.onnx` lands in the checkout.
    """
    from trainer.training import _prepare_ultralytics, import_yolo

    folder = tmp_path_factory.mktemp("onnx")
    _prepare_ultralytics(folder / "ultralytics-config")
    os.environ["YOLO_OFFLINE"] = "1"
    previous = Path.cwd()
    os.chdir(folder)
    try:
        exported = import_yolo()("yolov8n.yaml").export(
            format="onnx", imgsz=192, dynamic=True, simplify=True, device="cpu"
        )
    finally:
        os.chdir(previous)
    return (folder / exported).read_bytes()


async def test_a_model_lost_by_triton_is_loaded_again(
    stack: Stack,
    settings: Settings,
    store: ObjectStore,
    engine: Engine,
    untrained_onnx: bytes,
    unique: str,
) -> None:
    task_id = f"restart{unique}"
    onnx_key = f"models/{task_id}/1/model.onnx"
    store.put_bytes(onnx_key, untrained_onnx)
    frames = [f"f{index}.jpg" for index in range(3)]
    with Session(engine) as session:
        for name in frames:
            image, _ = synthetic_frame(len(name))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG")
            key = f"tasks/{task_id}/data/{name}"
            store.put_bytes(key, buffer.getvalue())
            session.add(
                AssistFrame(
                    task_id=task_id,
                    name=name,
                    object_key=key,
                    width=image.width,
                    height=image.height,
                    sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
                )
            )
        session.commit()
    server = ModelServer(
        settings, store, Transactions(engine, settings.topic, projection=PROJECTION)
    )
    loaded = await server.load(
        task_id, 1, onnx_key, ["box"], hashlib.sha256(untrained_onnx).hexdigest()
    )
    assert loaded is not None and loaded.backend == "triton"

    triton = grpcclient.InferenceServerClient(settings.triton_grpc_url)
    triton.unload_model(triton_model_name(task_id))  # what a Triton restart does to it
    assert not triton.is_model_ready(triton_model_name(task_id))

    assert await server.preannotate(task_id, frames) == len(frames)
    assert triton.is_model_ready(triton_model_name(task_id)), "loaded into Triton again"
    with Session(engine) as session:
        rows = session.exec(select(Preannotation).where(Preannotation.task_id == task_id)).all()
    assert sorted(row.frame for row in rows) == frames
    assert {row.backend for row in rows} == {"triton"}
    triton.unload_model(triton_model_name(task_id))
    triton.close()
