"""Assembles the FastAPI app of a process: health, metrics and the services' routers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response, status
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from labelloop import __version__
from labelloop.messaging.topics import cluster_reachable_async
from labelloop.runtime import Runtime, Service, prepare_database

log = logging.getLogger(__name__)


def create_api(
    runtime: Runtime, services: list[Service], routed: list[Service] | None = None
) -> FastAPI:
    """The app for ``services``; its lifespan runs the broker and the background loops.

    ``routed``: the services whose HTTP routes it answers (default: ``services``).
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_database(runtime)
        await runtime.broker.start()
        loops = [asyncio.create_task(loop()) for loop in runtime.background]
        log.info("serving %s", ", ".join(s.NAME for s in services))
        try:
            yield
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await runtime.broker.stop()

    app = FastAPI(
        title="labelloop",
        version=__version__,
        description="Event-driven image annotation with a model in the loop.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime

    @app.middleware("http")
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

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Readiness: broker and database reachable.")
    async def readyz(response: Response) -> dict[str, bool]:
        checks = {
            "kafka": await cluster_reachable_async(runtime.settings.kafka_bootstrap_servers),
            "database": await asyncio.to_thread(_database_reachable, runtime),
        }
        if not all(checks.values()):
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return checks

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    for service in routed if routed is not None else services:
        app.include_router(service.router)
    return app


def _database_reachable(runtime: Runtime) -> bool:
    from sqlalchemy import text

    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
