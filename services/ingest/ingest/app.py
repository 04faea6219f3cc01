"""ingest as a deployable unit: its typed subscribers and its HTTP routes."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from fastapi import APIRouter, HTTPException, Response, status
from pydantic import BaseModel, Field
from sqlmodel import select

from ingest import IDENTITY
from ingest.domain import MAX_FRAME_NAME
from ingest.handlers import IngestDeps, handle_storage_events
from ingest.models import Frame, FramePublic, TaskIngest
from ingest.projections import PROJECTION
from ingest.reconciler import Backoff, Reconciler
from labelloop.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep
from labelloop.api.tasks import require_task
from labelloop.integrity import NotAsRecorded, read_verified
from labelloop.messaging.subscribers import EventSubscribers
from labelloop.runtime import Runtime
from schemas.events import (
    FrameProcessed,
    FrameRejected,
    ObjectsRecovered,
    TaskDataReady,
    TaskFramesListed,
)
from schemas.s3 import S3EventNotification

__all__ = ["IDENTITY", "register", "router", "subscribers"]

router = APIRouter(prefix="/api", tags=["ingest"])
subscribers: EventSubscribers[IngestDeps] = EventSubscribers(
    IDENTITY,
    produces=(FrameProcessed, FrameRejected, TaskFramesListed, TaskDataReady, ObjectsRecovered),
    max_records=lambda settings: settings.ingest_batch_max_records,
)


@subscribers.handler(S3EventNotification)
async def on_objects_created(
    notifications: Sequence[S3EventNotification], deps: IngestDeps
) -> None:
    """Validate the frames and manifests the object store announced, each task's together.

    Each task's new frames are recorded in one transaction, then its manifests. The store's
    test events (``s3:TestEvent``, versitygw's at start) are validated, then left out: no
    handler takes them.
    """
    await handle_storage_events(list(notifications), deps)


def register(runtime: Runtime) -> None:
    deps = IngestDeps(
        store=runtime.store,
        transactions=runtime.transactions.bound(PROJECTION),
        max_frame_bytes=runtime.settings.ingest_max_frame_bytes,
        max_frame_pixels=runtime.settings.ingest_max_frame_pixels,
        raw_event_keys=runtime.settings.s3_event_key_encoding == "raw",
        fetch_concurrency=runtime.settings.ingest_fetch_concurrency,
        fetch_budget_bytes=runtime.settings.ingest_fetch_budget_bytes,
        decode_pool=ThreadPoolExecutor(runtime.settings.ingest_decode_threads, "ingest-decode"),
    )
    subscribers.subscribe(runtime, deps)

    settings = runtime.settings
    if settings.ingest_reconcile:
        reconciler = Reconciler(
            deps,
            Backoff(settings.ingest_reconcile_quiet_s, settings.ingest_reconcile_max_interval_s),
            tick_s=settings.ingest_reconcile_tick_s,
            horizon_s=settings.ingest_reconcile_horizon_s,
        )
        runtime.background.append(reconciler.run)


class UploadRequest(BaseModel):
    files: list[str] = Field(min_length=1, max_length=10_000, description="Frame file names.")


class UploadUrls(BaseModel):
    frames: dict[str, str] = Field(description="Frame name → presigned PUT URL.")
    manifest: str = Field(description="Presigned PUT URL of `manifest.json`.")
    expires_in_s: int


class IngestStatus(BaseModel):
    declared: int | None = Field(description="Entries in the manifest; null before it arrives.")
    manifest_error: str | None
    processed: int
    rejected: int
    data_ready: bool
    frames: list[FramePublic]


@router.post("/tasks/{task_id}/uploads")
def presign_uploads(
    task_id: str, body: UploadRequest, runtime: RuntimeDep, session: SessionDep, admin: AdminDep
) -> UploadUrls:
    """Presigned PUT URLs for a task's frames and manifest (upload straight to the store)."""
    require_task(session, task_id, admin)
    expires = timedelta(hours=1)
    client, bucket = runtime.store.client, runtime.store.bucket
    for name in body.files:
        if "/" in name or name in {"", ".", ".."}:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, f"`{name}` is not a file name"
            )
        if len(name) > MAX_FRAME_NAME:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"`{name[:40]}…` has {len(name)} characters; frame names are at most "
                f"{MAX_FRAME_NAME}",
            )
    return UploadUrls(
        frames={
            name: client.presigned_put_object(bucket, f"tasks/{task_id}/data/{name}", expires)
            for name in body.files
        },
        manifest=client.presigned_put_object(bucket, f"tasks/{task_id}/manifest.json", expires),
        expires_in_s=int(expires.total_seconds()),
    )


@router.get("/tasks/{task_id}/frames")
def task_frames(task_id: str, session: SessionDep, principal: PrincipalDep) -> IngestStatus:
    """Each received frame's outcome (processed, or rejected with a reason)."""
    require_task(session, task_id, principal)
    frames = list(session.exec(select(Frame).where(Frame.task_id == task_id)))
    ingest = session.get(TaskIngest, task_id)
    return IngestStatus(
        declared=ingest.declared if ingest else None,
        manifest_error=ingest.manifest_error if ingest else None,
        processed=sum(frame.status == "processed" for frame in frames),
        rejected=sum(frame.status == "rejected" for frame in frames),
        data_ready=bool(ingest and ingest.data_ready_at),
        frames=[FramePublic.model_validate(frame, from_attributes=True) for frame in frames],
    )


IMAGE_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
}


@router.get(
    "/tasks/{task_id}/frames/{name}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}}, 409: {"description": "Bytes changed."}},
)
def frame_image(
    task_id: str, name: str, runtime: RuntimeDep, session: SessionDep, principal: PrincipalDep
) -> Response:
    """A processed frame's image, the bytes ingest validated (checked against its sha256)."""
    require_task(session, task_id, principal)
    frame = session.get(Frame, (task_id, name))
    if frame is None or frame.status != "processed":
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no processed frame {name}")
    try:
        data = read_verified(
            runtime.store,
            frame.object_key,
            frame.sha256,
            max_bytes=runtime.settings.ingest_max_frame_bytes,
        )
    except NotAsRecorded as changed:
        raise HTTPException(status.HTTP_409_CONFLICT, str(changed)) from changed
    return Response(
        data,
        media_type=IMAGE_TYPES.get(frame.format or "", "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
