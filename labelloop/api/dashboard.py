"""A read-only dashboard at ``/ui/``: tasks, jobs, models, advice and the live timeline.

Every page is made from the public JSON routes, called in process with the visitor's own token
(kept in an HttpOnly cookie after ``/ui/login``), so it shows exactly what that token may read
through the API and nothing else: an annotator's dashboard lists its tasks alone, and no
admin-only event or route leaks. Live updates come from the task's SSE timeline; nothing here
writes anything but the cookie.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlmodel import Session

from labelloop.api.charts import BOX, training_curves
from labelloop.api.deps import get_runtime, resolve_principal
from labelloop.api.tasks import event_stream, hidden_types, sse_response
from labelloop.auth import Principal, Role
from labelloop.timeline import EventRecord, newest_event
from schemas.events import EVENT_TYPES

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)

COOKIE = "labelloop_token"
LOGIN_MAX_BYTES = 4096
"""The login form's body (a token) is read without a token, so it is kept this small."""
OPEN_BODIES = {f"{router.prefix}/login": LOGIN_MAX_BYTES}
TIMELINE_SHOWN = 300
"""Newest events a task page lists (the live stream adds the rest as they come)."""
TASKS_SHOWN = 50
SUMMARIES_AT_ONCE = 4
"""Tasks the tasks page reads at once (four routes each): the rest wait, so one page view
does not take every database connection of the pool."""
FRAMES_SHOWN = 200
"""Frames a task page links to (the next frames and the label issues link theirs too)."""
DELIVERIES_SHOWN = 100

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(("html",)),
)
_templates.globals["box"] = BOX


@dataclass(frozen=True)
class Visitor:
    """Who is looking: the principal and the token its pages call the API with."""

    principal: Principal
    token: str


def _holder(request: Request, token: str) -> Principal | None:
    runtime = get_runtime(request)
    with Session(runtime.engine) as session:
        return resolve_principal(runtime, session, token) if token else None


def _visitor(request: Request) -> Visitor | None:
    token = request.cookies.get(COOKIE, "")
    principal = _holder(request, token)
    return None if principal is None else Visitor(principal, token)


def _to_login(request: Request) -> RedirectResponse:
    target = quote(request.url.path)
    return RedirectResponse(f"/ui/login?next={target}", status.HTTP_303_SEE_OTHER)


def _page(name: str, **values: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**values))


class Api:
    """The public routes, in process, as the visitor."""

    def __init__(self, request: Request, visitor: Visitor) -> None:
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app),
            base_url="http://labelloop",
            headers={"Authorization": f"Bearer {visitor.token}"},
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def raw(self, path: str) -> httpx.Response:
        return await self._client.get(path)

    async def get(self, path: str, **params: Any) -> Any:
        """The route's JSON; None where it answers 404 or 409 (nothing there yet)."""
        response = await self._client.get(path, params=params)
        if response.status_code in (status.HTTP_404_NOT_FOUND, status.HTTP_409_CONFLICT):
            return None
        if response.status_code >= 400:
            raise HTTPException(response.status_code, response.json().get("detail"))
        return response.json()


@router.get("/login")
def login_form(request: Request, next: str = "/ui/") -> HTMLResponse:
    return _page("login.html", next=_safe_next(next), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token and keep it in an HttpOnly, same-site cookie for the dashboard's pages."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or ["/ui/"])[0])
    if await asyncio.to_thread(_holder, request, token) is None:
        page = _page("login.html", next=target, error="That is not a valid labelloop token.")
        page.status_code = status.HTTP_401_UNAUTHORIZED
        return page
    answer = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    answer.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
        max_age=12 * 3600,
    )
    return answer


@router.post("/logout")
def logout() -> Response:
    answer = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    answer.delete_cookie(COOKIE, path="/ui")
    return answer


def _safe_next(target: str) -> str:
    """Only a dashboard path (no open redirect to another site)."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/"


async def _task_summary(api: Api, task: dict[str, Any]) -> dict[str, Any]:
    """One task's figures: frames, jobs with their label progress, labeled frames against the
    threshold, the models and the current one."""
    task_id = task["id"]
    frames, jobs, models, progress = await asyncio.gather(
        api.get(f"/api/tasks/{task_id}/frames"),
        api.get(f"/api/tasks/{task_id}/jobs"),
        api.get(f"/api/tasks/{task_id}/models"),
        api.get(f"/api/tasks/{task_id}/label-progress"),
    )
    labeled_in = {job["job_id"]: job["labeled"] for job in (progress or {}).get("jobs", [])}
    current = next((m for m in models or [] if m.get("current")), None)
    return {
        "task": task,
        "frames": frames,
        "jobs": [{**job, "labeled": labeled_in.get(job["id"], 0)} for job in jobs or []],
        "models": models or [],
        "labeled": (progress or {}).get("labeled_frames", 0),
        "next_training_at": (progress or {}).get("next_training_at", task["label_threshold"]),
        "current": current,
    }


async def _summaries(api: Api) -> list[dict[str, Any]]:
    """The figures of the newest tasks the visitor may read, a few tasks at a time."""
    gate = asyncio.Semaphore(SUMMARIES_AT_ONCE)

    async def summary(task: dict[str, Any]) -> dict[str, Any]:
        async with gate:
            return await _task_summary(api, task)

    tasks = await api.get("/api/tasks", limit=TASKS_SHOWN) or []
    return list(await asyncio.gather(*(summary(task) for task in tasks)))


@router.get("/", response_class=HTMLResponse)
async def tasks_page(request: Request) -> Response:
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        return _to_login(request)
    principal = visitor.principal
    after = await asyncio.to_thread(_newest_seq, request, principal, principal.readable)
    async with Api(request, visitor) as api:
        summaries = await _summaries(api)
    return _page(
        "tasks.html",
        visitor=visitor,
        summaries=summaries,
        last_seq=after,
        event_types=json.dumps(sorted(EVENT_TYPES)),
    )


@router.get("/tasks-table", response_class=HTMLResponse)
async def tasks_table(request: Request) -> Response:
    """The tasks page's table alone, which the page fetches again as its tasks change."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /ui/login")
    async with Api(request, visitor) as api:
        summaries = await _summaries(api)
    return _page("tasks_table.html", summaries=summaries)


def _newest_seq(request: Request, principal: Principal, tasks: frozenset[str] | None) -> int:
    """Where a page's live stream starts: the newest event of ``tasks`` (None: every task) the
    principal may see, in the log now (the page, read after this, may repeat a few events the
    stream sends; the page drops those by id)."""
    with Session(get_runtime(request).engine) as session:
        newest = newest_event(session, tasks, hidden=hidden_types(principal))
    return int(newest[0].seq or 0) if newest else 0


@router.get("/changes")
async def changes_stream(request: Request) -> StreamingResponse:
    """SSE for the tasks page: whenever any task the cookie's holder may read has new events,
    the newest of them alone (by its type and id), which is the page's cue to fetch its table."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /ui/login")
    resume = _resume_from(request)
    principal, token, runtime = visitor.principal, visitor.token, get_runtime(request)
    scope, hidden = principal.readable, hidden_types(principal)

    def fetch(session: Session, after: int) -> list[EventRecord]:
        return newest_event(session, scope, after_seq=after, hidden=hidden)

    def still_allowed() -> bool:
        with Session(runtime.engine) as session:
            return resolve_principal(runtime, session, token) is not None

    return sse_response(
        runtime, request, token, fetch, still_allowed=still_allowed, after_seq=resume
    )


def _resume_from(request: Request) -> int:
    """Where a stream resumes: ``Last-Event-ID`` (a reconnecting EventSource) or ``?after=``."""
    resume = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not resume.isdecimal() or len(resume) > 18:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "Last-Event-ID is not an id")
    return int(resume)


async def _task_page_values(
    request: Request,
    visitor: Visitor,
    task_id: str,
    *,
    stream: bool = True,
    correlation: str | None = None,
) -> dict[str, Any]:
    """What the task page shows; ``stream=False``: its figures alone, without where its live
    stream starts (the page's refresh as events arrive). ``correlation``: the timeline shows
    that chain of events alone."""
    principal, this_task = visitor.principal, frozenset({task_id})
    last_seq = await asyncio.to_thread(_newest_seq, request, principal, this_task) if stream else 0
    async with Api(request, visitor) as api:
        task = await api.get(f"/api/tasks/{task_id}")
        if task is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")
        summary, events, next_frames, issues = await asyncio.gather(
            _task_summary(api, task),
            api.get(f"/api/tasks/{task_id}/events"),
            api.get(f"/api/tasks/{task_id}/next-frames", limit=20),
            api.get(f"/api/tasks/{task_id}/label-issues", limit=50),
        )
    deliveries = await _deliveries(request, visitor, task_id)
    events = events or []
    if correlation is not None:
        events = [e for e in events if e.get("correlationid") == correlation]
    return {
        "deliveries": deliveries,
        "visitor": visitor,
        "s": summary,
        "curves": training_curves(events),
        "next_frames": next_frames,
        "issues": issues,
        "timeline": list(reversed(events[-TIMELINE_SHOWN:])),
        "correlation": correlation,
        "last_seq": last_seq,
        "refused": [f for f in (summary["frames"] or {}).get("frames", []) if f.get("reason")],
        "frame_names": sorted(
            f["name"]
            for f in (summary["frames"] or {}).get("frames", [])
            if f["status"] == "processed"
        )[:FRAMES_SHOWN],
    }


async def _deliveries(request: Request, visitor: Visitor, task_id: str) -> list[dict[str, Any]]:
    """The task's webhook deliveries with their attempts, newest first (admins only: the
    webhooks routes are theirs, and a delivery names its subscriber's URL)."""
    if visitor.principal.role is not Role.ADMIN:
        return []
    async with Api(request, visitor) as api:
        subscriptions = await api.get("/api/webhooks") or []
        mine = [s for s in subscriptions if s.get("task_id") in (None, task_id)]
        listed = await asyncio.gather(
            *(api.get(f"/api/webhooks/{s['id']}/deliveries") for s in mine)
        )
    deliveries = []
    for subscription, rows in zip(mine, listed, strict=True):
        for row in rows or []:
            if row.get("task_id") == task_id:
                deliveries.append({**row, "url": subscription["url"]})
    deliveries.sort(key=lambda d: d["created_at"], reverse=True)
    return deliveries[:DELIVERIES_SHOWN]


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: str, correlation: str | None = None) -> Response:
    """A task, live; ``?correlation=ID`` narrows its timeline to one chain of events (a
    training run, an upload's frames), which the timeline's correlation links open."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        return _to_login(request)
    values = await _task_page_values(request, visitor, task_id, correlation=correlation)
    return _page(
        "task.html", event_types=json.dumps(sorted(EVENT_TYPES)), task_id=task_id, **values
    )


@router.get("/tasks/{task_id}/summary", response_class=HTMLResponse)
async def task_summary(request: Request, task_id: str) -> Response:
    """The task page's figures alone, which the page fetches again as events arrive."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /ui/login")
    values = await _task_page_values(request, visitor, task_id, stream=False)
    return _page("summary.html", **values)


@router.get("/tasks/{task_id}/events")
async def task_events_stream(request: Request, task_id: str) -> StreamingResponse:
    """The task's timeline as SSE for the cookie's holder (an EventSource sends no header)."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None or not visitor.principal.can_read(task_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")
    resume = _resume_from(request)
    hidden = hidden_types(visitor.principal)
    runtime = get_runtime(request)
    return event_stream(runtime, request, task_id, visitor.token, hidden, resume)


@router.get("/tasks/{task_id}/frames/{name}", response_class=HTMLResponse)
async def frame_page(request: Request, task_id: str, name: str) -> Response:
    """One frame: its human labels and the newest pre-annotation, drawn on the image."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        return _to_login(request)
    async with Api(request, visitor) as api:
        task, frames, jobs = await asyncio.gather(
            api.get(f"/api/tasks/{task_id}"),
            api.get(f"/api/tasks/{task_id}/frames"),
            api.get(f"/api/tasks/{task_id}/jobs"),
        )
        frame = next((f for f in (frames or {}).get("frames", []) if f["name"] == name), None)
        if task is None or frame is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no frame {name}")
        job = next((j for j in jobs or [] if name in j["frames"]), None)
        labels: list[dict[str, Any]] = []
        predicted: dict[str, Any] | None = None
        if job is not None:
            annotations, preannotations = await asyncio.gather(
                api.get(f"/api/jobs/{job['id']}/annotations"),
                api.get(f"/api/jobs/{job['id']}/preannotations"),
            )
            labeled = [f for f in (annotations or {}).get("frames", []) if f["frame"] == name]
            labels = labeled[0]["boxes"] if labeled else []
            found = [f for f in (preannotations or {}).get("frames", []) if f["frame"] == name]
            predicted = found[0] if found else None
    return _page(
        "frame.html",
        visitor=visitor,
        task=task,
        frame=frame,
        job=job,
        labels=labels,
        labeled=job is not None and bool(labels or labeled),
        predicted=predicted,
    )


@router.get("/tasks/{task_id}/frames/{name}/image")
async def frame_image(request: Request, task_id: str, name: str) -> Response:
    """The frame's image for the cookie's holder (the API route checks access and bytes)."""
    visitor = await asyncio.to_thread(_visitor, request)
    if visitor is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in at /ui/login")
    async with Api(request, visitor) as api:
        answer = await api.raw(f"/api/tasks/{quote(task_id)}/frames/{quote(name)}/image")
    if answer.status_code != status.HTTP_200_OK:
        raise HTTPException(answer.status_code, answer.json().get("detail"))
    return Response(
        answer.content,
        media_type=answer.headers.get("content-type"),
        headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )
