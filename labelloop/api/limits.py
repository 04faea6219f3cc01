"""Requests with a body: the caller is known and the size bounded before the body is read.

FastAPI reads and parses a JSON body before any dependency runs, so without this an
unauthenticated client could make a pod read gigabytes. Here a request that carries a body is
refused with 401 when its token is missing or unknown, with 413 when its declared length is
over ``LABELLOOP_API_MAX_BODY_BYTES``, and cut off with 413 as soon as a chunked body passes it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from fastapi import HTTPException, status
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labelloop.api.deps import credential, resolve_principal
from labelloop.runtime import Runtime

BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class GuardBodies:
    """ASGI middleware; see the module docstring.

    ``open_bodies``: paths that take a body from callers without a token (a peer's webhooks
    that carry no credential), each with its own, smaller bound; what they are sent is only a
    hint their route checks at its source.
    """

    def __init__(
        self, app: ASGIApp, runtime: Runtime, open_bodies: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.max_bytes = runtime.settings.api_max_body_bytes
        self.open_bodies = dict(open_bodies or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODILESS:
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope.get("headers", [])}
        declared = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if (declared is None or declared == b"0") and not chunked:
            await self.app(scope, receive, send)  # nothing to read
            return
        open_limit = self.open_bodies.get(scope["path"])
        limit = self.max_bytes if open_limit is None else min(open_limit, self.max_bytes)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, status.HTTP_413_CONTENT_TOO_LARGE, self._too_large(limit))
            return
        if open_limit is None and not await asyncio.to_thread(
            self._authenticated, headers.get(b"authorization", b"")
        ):
            await _answer(send, status.HTTP_401_UNAUTHORIZED, "a valid bearer token is needed")
            return
        await self.app(scope, self._bounded(receive, limit), send)

    def _authenticated(self, authorization: bytes) -> bool:
        token = credential(authorization.decode("latin-1"))
        if token is None:
            return False
        with Session(self.runtime.engine) as session:
            return resolve_principal(self.runtime, session, token) is not None

    def _bounded(self, receive: Receive, limit: int) -> Receive:
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, self._too_large(limit))
            return message

        return bounded

    def _too_large(self, limit: int) -> str:
        where = "LABELLOOP_API_MAX_BODY_BYTES" if limit == self.max_bytes else "this route's bound"
        return f"the body is over the limit of {limit:,} bytes ({where})"


async def _answer(send: Send, code: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if code == status.HTTP_401_UNAUTHORIZED:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
