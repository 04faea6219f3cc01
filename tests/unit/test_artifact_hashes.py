"""The hashes that make "what is used is what was checked" hold (issue 14, items 6 and 10):
where they are recorded, and the one read that checks them, without servers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from labeler_assist.models import AssistFrame
from labeler_assist.projections import apply_frame_processed as assist_frame_processed
from labelloop.db import create_tables, get_engine
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.storage import ObjectStore, ObjectTooLarge
from schemas.events import (
    FrameProcessed,
    FrameProcessedData,
    ModelMetrics,
    ModelPublished,
    ModelPublishedData,
    TrainingStarted,
    TrainingStartedData,
)
from trainer.models import ModelVersion, TrainingFrame
from trainer.projections import apply_frames_batch, apply_model_published, apply_training_started

TASK = "t1"
A, B = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = get_engine(f"sqlite:///{tmp_path}/hashes.db")
    create_tables(engine)
    return engine


def processed(frame: str, sha256: str) -> FrameProcessed:
    return FrameProcessed.create(
        FrameProcessedData(
            task_id=TASK,
            frame=frame,
            object_key=f"tasks/{TASK}/data/{frame}",
            sha256=sha256,
            width=48,
            height=32,
            size_bytes=10,
            format="JPEG",
        ),
        source="/test",
        key=(frame, sha256),
        taskid=TASK,
    )


def test_the_trainer_and_labeler_assist_keep_the_hash_ingest_validated(engine: Engine) -> None:
    with Session(engine) as session:
        apply_frames_batch(session, [processed("f.jpg", A), processed("f.jpg", B)])
        assist_frame_processed(session, processed("f.jpg", A))
        session.commit()
        trained = session.get(TrainingFrame, (TASK, "f.jpg"))
        served = session.get(AssistFrame, (TASK, "f.jpg"))
    assert trained is not None and (trained.sha256, trained.width, trained.height) == (A, 48, 32)
    assert served is not None and served.sha256 == A  # the first upload wins, as in ingest


def test_model_published_records_the_hashes_of_its_files(engine: Engine) -> None:
    metrics = ModelMetrics(map50=0.9, map50_95=0.6)
    started = TrainingStarted.create(
        TrainingStartedData(task_id=TASK, run_id="r", version=1, device="cpu", epochs=1),
        source="/test",
        key=("r",),
        taskid=TASK,
    )
    published = ModelPublished.create(
        ModelPublishedData(
            task_id=TASK,
            run_id="r",
            version=1,
            metrics=metrics,
            onnx_key="k",
            onnx_sha256=A,
            weights_sha256=B,
        ),
        source="/test",
        key=("r", 1),
        taskid=TASK,
    )
    with Session(engine) as session:
        apply_training_started(session, started)
        apply_model_published(session, published)
        session.commit()
        row = session.get(ModelVersion, (1, TASK))
    assert row is not None and (row.onnx_sha256, row.weights_sha256) == (A, B)
    # an event from before hashes were recorded still parses (replay), with none recorded
    old = ModelPublishedData(task_id=TASK, run_id="r", version=1, metrics=metrics, onnx_key="k")
    assert old.onnx_sha256 is None and old.weights_sha256 is None


class Bucket(ObjectStore):
    """An object store of one dict, enough for the read that checks a hash."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_bytes(
        self, key: str, *, max_bytes: int | None = None, etag: str | None = None
    ) -> bytes:
        data = self.objects[key]
        if max_bytes is not None and len(data) > max_bytes:
            raise ObjectTooLarge(key)
        return data


def test_read_verified_refuses_anything_but_the_recorded_bytes() -> None:
    bucket = Bucket({"k": b"a"})
    assert read_verified(bucket, "k", A, max_bytes=10) == b"a"
    with pytest.raises(NotAsRecorded, match="replaced"):
        read_verified(bucket, "k", B, max_bytes=10)
    with pytest.raises(NotAsRecorded, match="no hash was recorded"):
        read_verified(bucket, "k", None, max_bytes=10)
    bucket.objects["k"] = b"a" * 11
    with pytest.raises(NotAsRecorded, match="over 10 bytes"):
        read_verified(bucket, "k", A, max_bytes=10)
