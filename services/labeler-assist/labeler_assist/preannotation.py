"""Pre-annotation: which detector serves which task, and pre-annotating frames with it.

Each task's current model is loaded into Triton under its own name (``labelloop-<task_id>``),
so tasks never share a model; when Triton is off or unreachable the same ONNX runs in process
with onnxruntime, and the events say so. Nothing here imports torch.

What is loaded is what was checked: a model's ONNX only if it hashes to the sha256 its
``model.published`` recorded (else it is not served: the task keeps the version it had, or gets
no pre-annotations), and a frame only if it hashes to what ingest validated (else it is not
pre-annotated; the log says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session, col, select

from labeler_assist import IDENTITY
from labeler_assist.models import Annotation, AssistFrame, Preannotation, ServedModel
from labeler_assist.quality import Box, frame_uncertainty
from labelloop.config import Settings
from labelloop.db import in_chunks
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.messaging.outbox import Transactions
from labelloop.metrics import INFERENCE_LATENCY
from labelloop.storage import ObjectStore
from schemas.envelope import CloudEvent
from schemas.events import PreannotationReady, PreannotationReadyData, PredictedBox

log = logging.getLogger(__name__)
BATCH = 8
MAX_MODEL_BYTES = 1024 * 1024 * 1024
"""An ONNX file is read no further than this (yolov8x's is ~270 MB)."""
MAX_TRAINED_LIST_BYTES = 64 * 1024 * 1024
"""A version's list of trained frames is read no further (a million names of 60 bytes)."""


@dataclass(frozen=True)
class TrainedOn:
    """Where the registry keeps the frames a version trained on, and the list's hash."""

    key: str | None = None
    sha256: str | None = None


class Detector(Protocol):
    async def detect(self, images: list[bytes]) -> list[list[Any]]: ...


@dataclass
class LoadedModel:
    task_id: str
    version: int
    labels: list[str]
    backend: str
    detector: Detector
    fallback_reason: str | None = None
    trained: frozenset[str] | None = field(default=None)
    """The frames this version trained on; None when unknown (a version from before they were
    kept, or a list that did not verify): such a version checks no labels."""

    def boxes(self, found: list[Any]) -> list[Box]:
        """A detector's boxes for one image with the task's class names."""
        names = self.labels
        return [
            Box(
                names[d.label] if d.label < len(names) else str(d.label),
                round(float(d.x), 1),
                round(float(d.y), 1),
                round(float(d.w), 1),
                round(float(d.h), 1),
                round(float(d.score), 4),
            )
            for d in found
        ]


def triton_model_name(task_id: str) -> str:
    return f"labelloop-{task_id}"


class _InProcess:
    """onnxruntime in this process, off the event loop."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    async def detect(self, images: list[bytes]) -> list[list[Any]]:
        result: list[list[Any]] = await asyncio.to_thread(self.detector.detect, images)
        return result


class ModelServer:
    """Loads each task's current version on demand and keeps it warm."""

    def __init__(self, settings: Settings, store: ObjectStore, transactions: Transactions) -> None:
        self.settings = settings
        self.store = store
        self.transactions = transactions
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def load(
        self,
        task_id: str,
        version: int,
        onnx_key: str,
        labels: list[str],
        onnx_sha256: str | None,
        trained_on: TrainedOn = TrainedOn(),
    ) -> LoadedModel | None:
        """Load ``version`` for the task: Triton first, onnxruntime when Triton cannot serve.

        An ONNX file that does not hash to ``onnx_sha256`` (or has none recorded) is refused:
        the task keeps the model it had (None if none), as when a model cannot load. The list
        of frames it trained on is read too (checked against its hash), so labels are checked
        only on other frames.
        """
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            current = self._loaded.get(task_id)
            if current is not None and current.version >= version:
                return current
            try:
                onnx = await asyncio.to_thread(
                    read_verified, self.store, onnx_key, onnx_sha256, max_bytes=MAX_MODEL_BYTES
                )
            except NotAsRecorded as refused:
                log.error("task %s: v%d not served: %s", task_id, version, refused)
                return current
            loaded = await self._load_backend(task_id, version, onnx, labels)
            loaded.trained = await asyncio.to_thread(self._trained, task_id, trained_on)
            self._loaded[task_id] = loaded
            if current is not None and current.backend == "triton":
                await current.detector.close()  # type: ignore[attr-defined]
            with Session(self.transactions.engine) as session:
                row = session.get(ServedModel, task_id) or ServedModel(
                    task_id=task_id,
                    version=version,
                    onnx_key=onnx_key,
                    labels=labels,
                    backend=loaded.backend,
                )
                row.version, row.onnx_key, row.labels = version, onnx_key, labels
                row.onnx_sha256 = onnx_sha256
                row.trained_frames_key = trained_on.key
                row.trained_frames_sha256 = trained_on.sha256
                row.backend = loaded.backend
                session.add(row)
                session.commit()
            log.info("task %s: serving v%d with %s", task_id, version, loaded.backend)
            return loaded

    def _trained(self, task_id: str, trained_on: TrainedOn) -> frozenset[str] | None:
        """The frames a version trained on, if its list is the one the registry wrote."""
        if trained_on.key is None:
            return None
        try:
            listing = read_verified(
                self.store, trained_on.key, trained_on.sha256, max_bytes=MAX_TRAINED_LIST_BYTES
            )
        except NotAsRecorded as refused:
            log.warning("task %s: checks no labels: %s", task_id, refused)
            return None
        return frozenset(str(name) for name in json.loads(listing))

    async def _load_backend(
        self, task_id: str, version: int, onnx: bytes, labels: list[str]
    ) -> LoadedModel:
        s = self.settings
        reason = "Triton is disabled (LABELLOOP_TRITON_ENABLED=false)"
        if s.triton_enabled:
            from labeler_assist.detectors import TritonDetector

            triton = TritonDetector(s.triton_grpc_url)
            try:
                await triton.load(
                    triton_model_name(task_id),
                    onnx,
                    imgsz=s.model_imgsz,
                    conf=s.assist_score_floor,
                    iou=s.serve_iou,
                )
                return LoadedModel(task_id, version, labels, "triton", triton)
            except Exception as error:  # unreachable, or it refused the model
                await triton.close()
                reason = f"Triton could not serve it: {type(error).__name__}: {error}"
                log.warning("task %s: %s; falling back to onnxruntime", task_id, reason)
        from labeler_assist.detectors import OnnxRuntimeDetector

        detector = OnnxRuntimeDetector(
            onnx, imgsz=s.model_imgsz, conf=s.assist_score_floor, iou=s.serve_iou
        )
        return LoadedModel(task_id, version, labels, "onnxruntime", _InProcess(detector), reason)

    async def for_task(self, task_id: str) -> LoadedModel | None:
        """The task's current model, reloaded after a restart; None before its first model."""
        loaded = self._loaded.get(task_id)
        with Session(self.transactions.engine) as session:
            row = session.get(ServedModel, task_id)
        if row is None:
            return None
        if loaded is not None and loaded.version == row.version:
            return loaded
        trained_on = TrainedOn(row.trained_frames_key, row.trained_frames_sha256)
        return await self.load(
            task_id, row.version, row.onnx_key, list(row.labels), row.onnx_sha256, trained_on
        )

    async def preannotate(
        self,
        task_id: str,
        frames: list[str],
        job_id: str | None = None,
        *,
        cause: CloudEvent[Any] | None = None,
    ) -> int:
        """Pre-annotate the frames nobody labeled yet with the task's current model."""
        model = await self.for_task(task_id)
        if model is None:
            return 0
        todo, known = await asyncio.to_thread(self._todo, task_id, frames, model.version)
        done = 0
        async for used, batch, detections in self.detect_frames(model, todo, known):
            await asyncio.to_thread(self._record, used, batch, detections, job_id, cause)
            done += len(batch)
        return done

    async def detect_frames(
        self, model: LoadedModel, frames: list[str], known: dict[str, AssistFrame]
    ) -> AsyncIterator[tuple[LoadedModel, list[str], list[list[Any]]]]:
        """The model's boxes for ``frames`` (all in ``known``), a batch at a time: the model
        that found them (another after a Triton failure), the frames, and their boxes. A frame
        whose bytes are not those ingest validated is left out (logged)."""
        for start in range(0, len(frames), BATCH):
            read = await asyncio.gather(
                *(
                    asyncio.to_thread(self._read_frame, known[name])
                    for name in frames[start : start + BATCH]
                )
            )
            batch = [n for n, image in zip(frames[start:], read, strict=False) if image is not None]
            images = [image for image in read if image is not None]
            if images:
                model, detections = await self._detect(model, images)
                yield model, batch, detections

    def _todo(
        self, task_id: str, frames: list[str], version: int
    ) -> tuple[list[str], dict[str, AssistFrame]]:
        """Of ``frames``, in order, those known here that nobody labeled and ``version`` has
        not pre-annotated yet; and the known frames by name."""
        labeled: set[str] = set()
        done: set[str] = set()
        known: dict[str, AssistFrame] = {}
        with Session(self.transactions.engine) as session:
            for chunk in in_chunks(frames):
                labeled.update(
                    session.exec(
                        select(Annotation.frame).where(
                            Annotation.task_id == task_id, col(Annotation.frame).in_(chunk)
                        )
                    )
                )
                done.update(
                    session.exec(
                        select(Preannotation.frame).where(
                            Preannotation.task_id == task_id,
                            Preannotation.model_version == version,
                            col(Preannotation.frame).in_(chunk),
                        )
                    )
                )
                known.update(
                    (row.name, row)
                    for row in session.exec(
                        select(AssistFrame).where(
                            AssistFrame.task_id == task_id, col(AssistFrame.name).in_(chunk)
                        )
                    )
                )
        todo = [name for name in frames if name in known and name not in labeled | done]
        return todo, known

    async def _detect(
        self, model: LoadedModel, images: list[bytes]
    ) -> tuple[LoadedModel, list[list[Any]]]:
        """The model's boxes for ``images``, and the model that found them: when Triton fails,
        the version is loaded again and the batch runs once more."""
        try:
            with INFERENCE_LATENCY.labels(model.backend).time():
                return model, await model.detector.detect(list(images))
        except Exception as error:
            if model.backend != "triton":
                raise
            # Triton restarted (its models are gone) or went away: load the version again,
            # into Triton if it answers, else in process, and run the batch once more.
            log.warning("task %s: Triton failed (%s); reloading the model", model.task_id, error)
            model = await self.reload(model.task_id)
            with INFERENCE_LATENCY.labels(model.backend).time():
                return model, await model.detector.detect(list(images))

    def _read_frame(self, frame: AssistFrame) -> bytes | None:
        """The frame's bytes if they are those ingest validated; None (logged) otherwise."""
        try:
            return read_verified(
                self.store,
                frame.object_key,
                frame.sha256,
                max_bytes=self.settings.ingest_max_frame_bytes,
            )
        except NotAsRecorded as refused:
            log.warning(
                "task %s: frame %s not pre-annotated: %s", frame.task_id, frame.name, refused.reason
            )
            return None

    async def reload(self, task_id: str) -> LoadedModel:
        """Forget the task's loaded model and load its current version again."""
        async with self._locks.setdefault(task_id, asyncio.Lock()):
            stale = self._loaded.pop(task_id, None)
        if stale is not None and stale.backend == "triton":
            with contextlib.suppress(Exception):
                await stale.detector.close()  # type: ignore[attr-defined]
        model = await self.for_task(task_id)
        if model is None:
            raise LookupError(f"task {task_id} has no model to reload (or it was refused)")
        return model

    def _record(
        self,
        model: LoadedModel,
        frames: list[str],
        detections: list[list[Any]],
        job_id: str | None,
        cause: CloudEvent[Any] | None,
    ) -> None:
        """Store the boxes from the serving confidence up, and how informative the frame is,
        and announce them, linked to the event that asked for them."""
        threshold = self.settings.serve_conf
        with self.transactions.unit_of_work() as uow:
            for name, found in zip(frames, detections, strict=True):
                if uow.session.get(Preannotation, (model.task_id, name, model.version)):
                    continue
                boxes = model.boxes(found)
                predictions = [
                    PredictedBox(label=b.label, x=b.x, y=b.y, w=b.w, h=b.h, score=b.score)
                    for b in boxes
                    if b.score >= threshold
                ]
                ready = PreannotationReady.create(
                    PreannotationReadyData(
                        task_id=model.task_id,
                        job_id=job_id,
                        frame=name,
                        model_version=model.version,
                        boxes=len(predictions),
                        predictions=predictions,
                        backend=model.backend,
                        fallback_reason=model.fallback_reason,
                        uncertainty=frame_uncertainty((b.score for b in boxes), threshold),
                    ),
                    source=IDENTITY.source,
                    key=(model.task_id, name, model.version),
                    taskid=model.task_id,
                    cause=cause,
                )
                uow.record(ready)
