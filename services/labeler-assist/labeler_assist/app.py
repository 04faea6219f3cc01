"""labeler-assist as a deployable unit: its typed subscribers and the annotation routes."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, cast

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, field_validator
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.background import BackgroundTask

from labeler_assist import IDENTITY
from labeler_assist.domain import InvalidAnnotation
from labeler_assist.export import ExportTooLarge, Part, write_export
from labeler_assist.guidance import check_labels, current_issues, ranking, record_ranking
from labeler_assist.handlers import remember
from labeler_assist.labels import NotFound, NotPermitted, NotYetKnown, submit_labels
from labeler_assist.lookups import find_job, newest_by_frame
from labeler_assist.models import Annotation, AssistFrame, AssistJob, Preannotation
from labeler_assist.preannotation import ModelServer, TrainedOn
from labeler_assist.projections import PROJECTION
from labeler_assist.studio_bridge import StudioBridge, process_bridge
from labeler_assist.studio_routes import OPEN_BODIES
from labeler_assist.studio_routes import router as studio_router
from labelloop.api.deps import PrincipalDep, RuntimeDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.datasets import DatasetError, DatasetFormat
from labelloop.db import in_chunks
from labelloop.messaging.outbox import Transactions
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from labelloop.tasks import Task
from schemas.events import (
    MAX_FRAMES_PER_EVENT,
    FrameLabels,
    FrameProcessed,
    FramesRanked,
    IssueKind,
    JobCreated,
    LabelIssue,
    LabelIssuesFound,
    LabelsSubmitted,
    LabelsThresholdReached,
    ModelPublished,
    PreannotationReady,
    RankedFrame,
)

__all__ = ["IDENTITY", "OPEN_BODIES", "register", "router", "subscribers"]

router = APIRouter()
"""Everything labeler-assist answers: the annotation routes and the Label Studio backend."""
assist_api = APIRouter(prefix="/api", tags=["annotations"])


@dataclass(frozen=True)
class AssistDeps:
    """What labeler-assist's handlers use: its transactions, the model server, the database."""

    transactions: Transactions
    server: ModelServer
    engine: Engine
    studio: StudioBridge


subscribers: EventSubscribers[AssistDeps] = EventSubscribers(
    IDENTITY,
    produces=(
        LabelsSubmitted,
        LabelsThresholdReached,
        PreannotationReady,
        FramesRanked,
        LabelIssuesFound,
    ),
)


@subscribers.handler(FrameProcessed, JobCreated, whole_batch=True)
async def on_views(events: Sequence[FrameProcessed | JobCreated], deps: AssistDeps) -> None:
    """Remember the batch's frames and jobs (labeler-assist's view), in one transaction.

    Whole-batch: every frame of the batch is known before any job of it is pre-annotated
    (pre-annotation reads the frames' validated hashes from this view).
    """
    await asyncio.to_thread(remember, list(events), deps.transactions)


@subscribers.handler(JobCreated)
async def on_job_created(events: Sequence[JobCreated], deps: AssistDeps) -> None:
    """Pre-annotate each new job's frames with the task's current model; for a connected
    Label Studio project, take the annotations its frames already have there."""
    for event in events:
        data = event.data
        await deps.server.preannotate(data.task_id, data.frames, data.job_id, cause=event)
        await deps.studio.on_job_created(event)


@subscribers.handler(PreannotationReady)
async def on_preannotation_ready(events: Sequence[PreannotationReady], deps: AssistDeps) -> None:
    """Push new pre-annotations of connected Label Studio projects into Label Studio."""
    await deps.studio.push(events)


@subscribers.handler(ModelPublished)
async def on_model_published(events: Sequence[ModelPublished], deps: AssistDeps) -> None:
    """Load each published model version, pre-annotate the task's frames with it, announce
    what to label next, and check every label it did not train on."""
    for event in events:
        with Session(deps.engine) as session:
            task = session.get(Task, event.data.task_id)
            frames = session.exec(
                select(AssistFrame.name).where(AssistFrame.task_id == event.data.task_id)
            ).all()
        if task is None:
            continue
        data = event.data
        server = deps.server
        trained_on = TrainedOn(data.trained_frames_key, data.trained_frames_sha256)
        await server.load(
            task.id, data.version, data.onnx_key, list(task.labels), data.onnx_sha256, trained_on
        )
        await server.preannotate(task.id, list(frames), cause=event)
        await asyncio.to_thread(record_ranking, server, task.id, event)
        await check_labels(server, task.id, None, "model.published", event)


@subscribers.handler(LabelsSubmitted)
async def on_labels_submitted(events: Sequence[LabelsSubmitted], deps: AssistDeps) -> None:
    """Check new labels at once with the serving version, which never trained on them."""
    for event in events:
        data = event.data
        frames = [item.frame for item in data.annotations]
        await check_labels(deps.server, data.task_id, frames, "labels.submitted", event)


def register(runtime: Runtime) -> None:
    transactions = runtime.transactions.bound(PROJECTION)
    studio = process_bridge(runtime)  # its model server serves the routes too
    deps = AssistDeps(transactions, studio.server, runtime.engine, studio)
    subscribers.subscribe(runtime, deps)


MAX_BOXES_PER_REQUEST = 4000
"""Boxes one submission holds at most (one ``labels.submitted`` event carries them all)."""


class JobAnnotations(BaseModel):
    """`{"frames": [{"frame": name, "boxes": [{"label", "x", "y", "w", "h"}]}]}` (pixels).

    At most a job's worth of frames, 1,000 boxes a frame and 4,000 boxes in all: a bigger
    submission is refused with 422 (send it in parts), one whose event would still outgrow the
    broker with 413.
    """

    frames: list[FrameLabels] = Field(max_length=MAX_FRAMES_PER_EVENT)

    @field_validator("frames")
    @classmethod
    def _boxes_within_limit(cls, frames: list[FrameLabels]) -> list[FrameLabels]:
        boxes = sum(len(item.boxes) for item in frames)
        if boxes > MAX_BOXES_PER_REQUEST:
            raise ValueError(
                f"{boxes} boxes in one request; at most {MAX_BOXES_PER_REQUEST}: send fewer frames"
            )
        return frames


@assist_api.put("/jobs/{job_id}/annotations")
def put_annotations(
    job_id: str, body: JobAnnotations, runtime: RuntimeDep, principal: PrincipalDep
) -> JobAnnotations:
    """Save labels for frames of a job (each frame's boxes replace its previous ones)."""
    try:
        # the check and the write: one transaction
        with runtime.transactions.bound(PROJECTION).unit_of_work() as uow:
            submit_labels(uow, job_id, body.frames, principal)
    except NotFound as missing:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(missing)) from missing
    except NotPermitted as refused:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(refused)) from refused
    except NotYetKnown as early:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{early}; retry shortly", headers={"Retry-After": "1"}
        ) from early
    except InvalidAnnotation as invalid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(invalid)) from invalid
    return body


@assist_api.get("/jobs/{job_id}/annotations")
def get_annotations(job_id: str, session: SessionDep, principal: PrincipalDep) -> JobAnnotations:
    """The job's labeled frames, in the job's frame order."""
    job = find_job(session, job_id)
    if job is None or not principal.can_read(job.task_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    by_frame = {
        row.frame: row
        for chunk in in_chunks(job.frames)
        for row in session.exec(
            select(Annotation).where(
                Annotation.task_id == job.task_id, col(Annotation.frame).in_(chunk)
            )
        )
    }
    return JobAnnotations(
        frames=[
            FrameLabels.model_validate({"frame": name, "boxes": by_frame[name].boxes})
            for name in job.frames
            if name in by_frame
        ]
    )


class ScoredBox(BaseModel):
    label: str
    x: float
    y: float
    w: float
    h: float
    score: float


class FramePreannotation(BaseModel):
    frame: str
    model_version: int
    backend: str
    boxes: list[ScoredBox]


class JobPreannotations(BaseModel):
    frames: list[FramePreannotation]


@assist_api.get("/jobs/{job_id}/preannotations")
def get_preannotations(
    job_id: str, session: SessionDep, principal: PrincipalDep
) -> JobPreannotations:
    """Each frame's boxes from the newest model version that pre-annotated it."""
    job = find_job(session, job_id)
    if job is None or not principal.can_read(job.task_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    newest = newest_by_frame(
        row
        for chunk in in_chunks(job.frames)
        for row in session.exec(
            select(Preannotation).where(
                Preannotation.task_id == job.task_id, col(Preannotation.frame).in_(chunk)
            )
        )
    )
    return JobPreannotations(
        frames=[
            FramePreannotation(
                frame=name,
                model_version=newest[name].model_version,
                backend=newest[name].backend,
                boxes=[ScoredBox.model_validate(box) for box in newest[name].boxes],
            )
            for name in job.frames
            if name in newest
        ]
    )


class JobProgress(BaseModel):
    job_id: str
    frames: int = Field(description="Frames in the job.")
    labeled: int = Field(description="Of those, frames with labels (an empty list counts).")


class LabelProgress(BaseModel):
    """How far labeling has come: the task's labeled frames, the next training, each job."""

    labeled_frames: int = Field(description="Frames of the task with labels.")
    label_threshold: int
    next_training_at: int = Field(
        description="Labeled frames at which the next threshold crossing queues a training run."
    )
    jobs: list[JobProgress] = Field(description="Jobs labeler-assist has taken in, in id order.")


@assist_api.get("/tasks/{task_id}/label-progress")
def label_progress(task_id: str, session: SessionDep, principal: PrincipalDep) -> LabelProgress:
    """Labeled frames of the task and of each job (names only are read, no boxes)."""
    task = require_task(session, task_id, principal)
    labeled = set(session.exec(select(Annotation.frame).where(Annotation.task_id == task_id)))
    jobs = session.exec(
        select(AssistJob).where(AssistJob.task_id == task_id).order_by(col(AssistJob.id))
    )
    threshold = task.label_threshold
    return LabelProgress(
        labeled_frames=len(labeled),
        label_threshold=threshold,
        next_training_at=(len(labeled) // threshold + 1) * threshold,
        jobs=[
            JobProgress(
                job_id=job.id,
                frames=len(job.frames),
                labeled=sum(name in labeled for name in job.frames),
            )
            for job in jobs
        ],
    )


MAX_NEXT_FRAMES = 1000
"""Frames one ``next-frames`` answer lists at most."""


class NextFrames(BaseModel):
    """What to label next: frames nobody has labeled, most informative first."""

    model_version: int | None = Field(description="The model that ranked them; None: no model.")
    strategy: str = Field(
        description="uncertainty: by the model's ambiguity over the frame's boxes (frames it has "
        "not scored yet follow, spread); spread: no model yet, frames evenly over the task."
    )
    frames: list[RankedFrame]


@assist_api.get("/tasks/{task_id}/next-frames")
def next_frames(
    task_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_NEXT_FRAMES)] = 20,
) -> NextFrames:
    """The frames to label next, as the task's current model ranks them."""
    require_task(session, task_id, principal)
    ranked = ranking(session, task_id)
    return NextFrames(
        model_version=ranked.model_version,
        strategy=ranked.strategy,
        frames=[RankedFrame(frame=frame, score=score) for frame, score in ranked.frames[:limit]],
    )


MAX_LABEL_ISSUES = 1000
"""Issues one ``label-issues`` answer lists at most."""


class LabelIssues(BaseModel):
    """Labels a model that never trained on their frames confidently disagrees with."""

    model_version: int = Field(description="The newest version among the checks shown.")
    checked: int = Field(description="Labeled frames whose current labels were checked.")
    issues: list[LabelIssue]


@assist_api.get(
    "/tasks/{task_id}/label-issues",
    responses={409: {"description": "No model has checked the task's labels yet."}},
)
def label_issues(
    task_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LABEL_ISSUES)] = 100,
    kind: Annotated[IssueKind | None, Query(description="Only issues of this kind.")] = None,
) -> LabelIssues:
    """The task's suspect labels, most likely first (each frame's newest check of its labels)."""
    require_task(session, task_id, principal)
    found = current_issues(session, task_id)
    if found.model_version is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"no model has checked task {task_id}'s labels yet: a published model checks the "
            "labeled frames it did not train on, and every later label as it is submitted",
        )
    issues: list[dict[str, Any]] = [i for i in found.issues if kind is None or i["kind"] == kind]
    return LabelIssues(
        model_version=found.model_version,
        checked=found.checked,
        issues=[LabelIssue.model_validate(issue) for issue in issues[:limit]],
    )


EXPORT_CHUNK = 1024 * 1024


@assist_api.get(
    "/tasks/{task_id}/export",
    summary="The task's dataset as a zip: COCO, Ultralytics YOLO, CVAT for images 1.1 or VOC.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}},
        413: {"description": "Over LABELLOOP_EXPORT_MAX_BYTES."},
    },
)
def export_task(
    task_id: str,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: PrincipalDep,
    format: Annotated[DatasetFormat, Query(description="The dataset format.")],
    include: Annotated[
        str,
        Query(
            pattern=r"^(labels|preannotations)(,(labels|preannotations))?$",
            description="What to export, comma-separated: labels, preannotations.",
        ),
    ] = "labels",
) -> StreamingResponse:
    """Images and annotations in the format's own layout, with ``labelloop.json`` saying what
    the export holds and which frames it left out (bytes no longer those ingest checked)."""
    task = require_task(session, task_id, principal)
    parts = cast(list[Part], include.split(","))  # the pattern admits only these two
    try:
        export = write_export(session, runtime.store, runtime.settings, task, format, parts)
    except ExportTooLarge as large:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(large)) from large
    except DatasetError as invalid:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(invalid)) from invalid
    return StreamingResponse(
        iter(lambda: export.read(EXPORT_CHUNK), b""),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{task_id}-{format}.zip"'},
        background=BackgroundTask(export.close),
    )


router.include_router(assist_api)
router.include_router(studio_router)
