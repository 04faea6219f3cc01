"""Tasks API: create and read tasks, and their event timeline (JSON or an SSE stream)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from labelloop.api.deps import (
    AdminDep,
    PrincipalDep,
    RuntimeDep,
    SessionDep,
    credential,
    resolve_principal,
    task_not_found,
)
from labelloop.auth import Principal, Role
from labelloop.tasks import (
    PROJECTION,
    Task,
    TaskCreate,
    TaskPublic,
    new_task_id,
    task_created_event,
)
from labelloop.timeline import ADMIN_ONLY_TYPES, EventRecord, task_events

router = APIRouter(prefix="/api", tags=["tasks"])

SSE_POLL_S = 0.1
SSE_KEEPALIVE_S = 15.0


@router.post("/tasks", status_code=status.HTTP_201_CREATED)
def create_task(body: TaskCreate, runtime: RuntimeDep, principal: AdminDep) -> TaskPublic:
    """Create a task; put frames under ``upload_prefix`` and the manifest at ``manifest_key``."""
    created = task_created_event(
        Task(**body.model_dump(), id=new_task_id(), created_by=principal.name)
    )
    with runtime.transactions.bound(PROJECTION).unit_of_work() as uow:
        uow.record(created)
        task = uow.session.get(Task, created.data.task_id)
    assert task is not None
    return TaskPublic.of(task)


MAX_LISTED_TASKS = 500
"""Tasks one ``GET /api/tasks`` answer lists at most (newest first)."""


@router.get("/tasks")
def list_tasks(
    session: SessionDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED_TASKS)] = 100,
) -> list[TaskPublic]:
    """The tasks the caller may read, newest first (a scoped token: its tasks alone)."""
    query = select(Task).order_by(col(Task.created_at).desc()).limit(limit)
    if principal.readable is not None:
        if not principal.readable:
            return []
        query = query.where(col(Task.id).in_(sorted(principal.readable)))
    return [TaskPublic.of(task) for task in session.exec(query)]


def hidden_types(principal: Principal) -> frozenset[str]:
    """Event types a principal's timelines leave out: admin-only ones, for all but admins."""
    return frozenset() if principal.role is Role.ADMIN else ADMIN_ONLY_TYPES


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
    responses={200: {"content": {"text/event-stream": {}}}, 429: {"description": "Too many"}},
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
    hidden = hidden_types(principal)
    streaming = "text/event-stream" in request.headers.get("accept", "")

    def look_up() -> list[Any]:  # off the event loop
        require_task(session, task_id, principal)
        if streaming:
            session.close()  # a waiting stream holds no database connection
            return []
        return [
            json.loads(record.document) for record in task_events(session, task_id, hidden=hidden)
        ]

    listed = await asyncio.to_thread(look_up)
    if not streaming:
        return listed
    token = credential(request.headers.get("authorization", "")) or ""
    return event_stream(runtime, request, task_id, token, hidden, last_event_id or 0, until)


def event_stream(
    runtime: Any,
    request: Request,
    task_id: str,
    token: str,
    hidden: frozenset[str],
    after_seq: int = 0,
    until: str | None = None,
) -> StreamingResponse:
    """A task's timeline as SSE for the holder of ``token`` (already allowed to read it): one
    of the token's stream slots, and the stream ends once the token no longer reads the task."""

    def fetch(session: Session, after: int) -> list[EventRecord]:
        return task_events(session, task_id, after_seq=after, hidden=hidden)

    return sse_response(
        runtime,
        request,
        token,
        fetch,
        still_allowed=lambda: _token_reads(runtime, token, task_id),
        after_seq=after_seq,
        until=until,
    )


EventFetch = Callable[[Session, int], list[EventRecord]]
"""What a stream sends next: the log's records after a sequence number, in log order."""


def sse_response(
    runtime: Any,
    request: Request,
    token: str,
    fetch: EventFetch,
    *,
    still_allowed: Callable[[], bool],
    after_seq: int = 0,
    until: str | None = None,
) -> StreamingResponse:
    """Records of the event log as SSE, polled with ``fetch``, on one of ``token``'s stream
    slots; the stream ends once ``still_allowed()`` turns false (checked every
    ``sse_recheck_s``), and after ``sse_max_life_s``."""
    slot = request.app.state.streams.take(token)
    return StreamingResponse(
        _stream(
            runtime,
            request,
            fetch,
            after_seq=after_seq,
            until=until,
            still_allowed=still_allowed,
            slot=slot,
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class StreamSlots:
    """Open event streams, per token and in all (the event loop is their only user)."""

    def __init__(self, total: int, per_token: int) -> None:
        self.total = total
        self.per_token = per_token
        self.open: dict[str, int] = {}

    def take(self, token: str) -> StreamSlot:
        """A slot for ``token``'s stream; 429 with ``Retry-After`` when none is free."""
        key = hashlib.sha256(token.encode()).hexdigest()
        mine = self.open.get(key, 0)
        if mine >= self.per_token or sum(self.open.values()) >= self.total:
            setting = "SSE_MAX_STREAMS_PER_TOKEN" if mine >= self.per_token else "SSE_MAX_STREAMS"
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many event streams are open (LABELLOOP_{setting}); close one or retry",
                headers={"Retry-After": "5"},
            )
        self.open[key] = mine + 1
        return StreamSlot(self, key)


class StreamSlot:
    """One open stream's place; given back once, when the stream ends or is dropped unstarted."""

    def __init__(self, slots: StreamSlots, key: str) -> None:
        self.slots, self.key, self.held = slots, key, True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.open[self.key] -= 1
            if not self.slots.open[self.key]:
                del self.slots.open[self.key]

    def __del__(self) -> None:  # a response whose body never started still frees its slot
        self.release()


def _token_reads(runtime: Any, token: str, task_id: str) -> bool:
    with Session(runtime.engine) as session:
        principal = resolve_principal(runtime, session, token)
    return principal is not None and principal.can_read(task_id)


async def _stream(
    runtime: Any,
    request: Request,
    fetch: EventFetch,
    *,
    after_seq: int,
    until: str | None,
    still_allowed: Callable[[], bool],
    slot: StreamSlot,
) -> AsyncIterator[str]:
    """Past events first, then new ones as the projection records them; ends when the token
    is revoked and after ``sse_max_life_s`` (the client resumes with ``Last-Event-ID``)."""
    settings = runtime.settings
    idle = 0.0
    started = checked = time.monotonic()
    try:
        while not await request.is_disconnected():
            now = time.monotonic()
            if now - started >= settings.sse_max_life_s:
                return
            if now - checked >= settings.sse_recheck_s:
                if not await asyncio.to_thread(still_allowed):
                    return
                checked = now
            with Session(runtime.engine) as session:
                records = await asyncio.to_thread(fetch, session, after_seq)
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
    finally:
        slot.release()
