"""Assembles the FastAPI app of a process: health, metrics and the services' routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from labelloop import __version__
from labelloop.api.limits import GuardBodies
from labelloop.api.tasks import StreamSlots
from labelloop.messaging.errors import EventTooLarge
from labelloop.messaging.topics import cluster_reachable_async
from labelloop.runtime import Runtime, Service, prepare_database

log = logging.getLogger(__name__)

READY_CACHE_S = 2.0


def create_api(
    runtime: Runtime, services: list[Service], routed: list[Service] | None = None
) -> FastAPI:
    """The app for ``services``; its lifespan runs the broker and the background loops.

    ``routed``: the services whose HTTP routes it answers (default: ``services``).
    """
    app = FastAPI(
        title="labelloop",
        version=__version__,
        description="Event-driven image annotation with a model in the loop.",
        lifespan=_lifespan(runtime, services),
    )
    app.state.runtime = runtime
    app.state.streams = StreamSlots(
        runtime.settings.sse_max_streams, runtime.settings.sse_max_streams_per_token
    )
    routes = routed if routed is not None else services
    open_bodies: dict[str, int] = {}
    for service in routes:  # paths a service takes bodies on without a token (a peer's hooks)
        open_bodies.update(getattr(service, "OPEN_BODIES", {}))
    app.add_middleware(GuardBodies, runtime=runtime, open_bodies=open_bodies)
    app.exception_handler(EventTooLarge)(event_too_large)
    app.middleware("http")(refuse_control_characters)
    _add_ops_routes(app, Readiness(runtime))
    for service in routes:
        app.include_router(service.router)
    return app


Lifespan = Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]


def _lifespan(runtime: Runtime, services: list[Service]) -> Lifespan:
    """Migrate, start the broker and the background loops; on the way out, stop them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_database(runtime)
        await runtime.broker.start()
        loops = [asyncio.create_task(loop()) for loop in runtime.background]
        log.info("serving %s", ", ".join(s.IDENTITY.name for s in services))
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await runtime.broker.stop()
            await runtime.close()

    return lifespan


async def event_too_large(request: Request, error: EventTooLarge) -> JSONResponse:
    """What a request would announce exceeds one event: refused before anything is stored."""
    return JSONResponse(
        {"detail": f"{error}; send less in one request"},
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
    )


async def refuse_control_characters(request: Request, call_next: Any) -> Any:
    """Ids never hold control characters, and PostgreSQL refuses NUL in any text: such a
    path or query is answered here, before it reaches a database lookup."""
    query = unquote(request.scope.get("query_string", b"").decode("latin-1"))
    target = request.scope["path"] + query  # the path as decoded for routing
    if any(ord(char) < 32 or ord(char) == 127 for char in target):
        return JSONResponse(
            {"detail": "the path or query contains control characters"},
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    return await call_next(request)


def _add_ops_routes(app: FastAPI, readiness: Readiness) -> None:
    """Liveness, readiness and Prometheus metrics."""

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: broker and database reachable.")
    async def readyz(response: Response) -> dict[str, bool]:
        checks = await readiness.checks()
        if not all(checks.values()):
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return checks

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class Readiness:
    """``/readyz``'s checks, run at most once per ``READY_CACHE_S`` however often it is asked
    (it is unauthenticated: each check opens a Kafka admin connection and a database one)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._lock = asyncio.Lock()
        self._at = -READY_CACHE_S
        self._checks: dict[str, bool] = {}
        self.runs = 0

    async def checks(self) -> dict[str, bool]:
        async with self._lock:  # concurrent callers share one run
            if time.monotonic() - self._at >= READY_CACHE_S:
                self.runs += 1
                self._checks = {
                    "kafka": await cluster_reachable_async(self.runtime.settings),
                    "database": await asyncio.to_thread(_database_reachable, self.runtime),
                }
                self._at = time.monotonic()
            return dict(self._checks)


def _database_reachable(runtime: Runtime) -> bool:
    from sqlalchemy import text

    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
