"""Tasks API: create and read tasks, and their event timeline (JSON or an SSE stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from labelloop.api.deps import AdminDep, PrincipalDep, RuntimeDep, SessionDep, task_not_found
from labelloop.auth import Principal
from labelloop.tasks import (
    Task,
    TaskCreate,
    TaskPublic,
    apply_task_created,
    new_task_id,
    task_created_event,
)
from labelloop.timeline import task_events
from schemas.topics import Topic

router = APIRouter(prefix="/api", tags=["tasks"])

SSE_POLL_S = 0.1
SSE_KEEPALIVE_S = 15.0


@router.post("/tasks", status_code=status.HTTP_201_CREATED)
def create_task(body: TaskCreate, runtime: RuntimeDep, principal: AdminDep) -> TaskPublic:
    """Create a task; put frames under ``upload_prefix`` and the manifest at ``manifest_key``."""
    created = task_created_event(
        Task(**body.model_dump(), id=new_task_id(), created_by=principal.name)
    )
    with runtime.transactions.session() as outbox:
        task = apply_task_created(outbox.session, created)
        outbox.emit(created, Topic.TASKS_EVENTS)
    return TaskPublic.of(task)


def require_task(session: Session, task_id: str, principal: Principal) -> Task:
    """The task, if it exists and the caller may see it; else 404 either way."""
    task = session.get(Task, task_id)
    if task is None or not principal.can_read(task_id):
        raise task_not_found(task_id)
    return task


@router.get("/tasks/{task_id}")
def read_task(task_id: str, session: SessionDep, principal: PrincipalDep) -> TaskPublic:
    return TaskPublic.of(require_task(session, task_id, principal))


@router.get(
    "/tasks/{task_id}/events",
    summary="The task's event timeline; `Accept: text/event-stream` streams it (SSE).",
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def task_timeline(
    task_id: str,
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    principal: PrincipalDep,
    until: Annotated[
        str | None, Query(description="SSE: end the stream after an event of this type.")
    ] = None,
    last_event_id: Annotated[int | None, Header()] = None,
) -> Any:
    require_task(session, task_id, principal)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return [json.loads(record.document) for record in task_events(session, task_id)]
    return StreamingResponse(
        _stream(runtime, request, task_id, after_seq=last_event_id or 0, until=until),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    runtime: Any, request: Request, task_id: str, *, after_seq: int, until: str | None
) -> AsyncIterator[str]:
    """Past events first, then new ones as the projection records them."""
    idle = 0.0
    while not await request.is_disconnected():
        with Session(runtime.engine) as session:
            records = await asyncio.to_thread(task_events, session, task_id, after_seq=after_seq)
        for record in records:
            after_seq = record.seq or after_seq
            yield f"id: {record.seq}\nevent: {record.type}\ndata: {record.document}\n\n"
            if until is not None and record.type == until:
                return
        if records:
            idle = 0.0
        else:
            idle += SSE_POLL_S
            if idle >= SSE_KEEPALIVE_S:
                idle = 0.0
                yield ": keep-alive\n\n"
        await asyncio.sleep(SSE_POLL_S)
