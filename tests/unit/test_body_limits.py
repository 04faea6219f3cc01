"""Request bodies: nobody unknown gets one read, and nobody gets more than the limit read,
declared or chunked (driven at the ASGI level, so what is read is counted exactly)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from labelloop.config import Settings
from labelloop.db import create_tables, get_engine
from labelloop.serve import build_app

CHUNK = 64 * 1024
LIMIT = 1024 * 1024


class Client:
    """Sends one request of endless 64 KiB chunks; counts the chunks the app pulled."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pulled = 0
        self.status = 0
        self.body = b""

    async def put(
        self,
        headers: list[tuple[bytes, bytes]],
        path: str = "/api/jobs/t1-j0000/annotations",
        method: str = "PUT",
    ) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"test"), (b"content-type", b"application/json"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("test", 80),
        }

        async def receive() -> dict[str, Any]:
            self.pulled += 1
            return {"type": "http.request", "body": b" " * CHUNK, "more_body": True}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
            elif message["type"] == "http.response.body":
                self.body += message.get("body", b"")

        await self.app(scope, receive, send)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/limits.db", api_max_body_bytes=LIMIT)
    create_tables(get_engine(settings.database_url))
    return settings


CHUNKED = (b"transfer-encoding", b"chunked")


async def test_an_unknown_caller_gets_401_before_any_byte_is_read(settings: Settings) -> None:
    for auth in ([], [(b"authorization", b"Bearer llt_not-a-token")]):
        client = Client(build_app(settings, ["api"]))
        await client.put([CHUNKED, *auth])
        assert client.status == 401 and client.pulled == 0, auth


async def test_a_declared_length_over_the_limit_is_refused_unread(settings: Settings) -> None:
    client = Client(build_app(settings, ["api"]))
    await client.put([(b"content-length", str(2 * LIMIT).encode())])
    assert client.status == 413 and client.pulled == 0
    assert b"LABELLOOP_API_MAX_BODY_BYTES" in client.body


async def test_a_chunked_body_is_cut_off_at_the_limit(settings: Settings) -> None:
    client = Client(build_app(settings, ["api"]))
    await client.put([CHUNKED, (b"authorization", f"Bearer {settings.admin_token}".encode())])
    assert client.status == 413, client.body
    assert client.pulled == LIMIT // CHUNK + 1, "read up to the limit and one chunk, no more"


async def test_basic_auth_with_a_token_as_password_is_a_known_caller(settings: Settings) -> None:
    import base64

    basic = base64.b64encode(f"label-studio:{settings.admin_token}".encode())
    client = Client(build_app(settings, ["api"]))
    await client.put([CHUNKED, (b"authorization", b"Basic " + basic)])
    assert client.status == 413, "read as a known caller's, up to the limit"
    wrong = base64.b64encode(b"label-studio:llt_nope")
    client = Client(build_app(settings, ["api"]))
    await client.put([CHUNKED, (b"authorization", b"Basic " + wrong)])
    assert client.status == 401 and client.pulled == 0


async def test_a_peers_webhook_is_read_without_a_token_to_its_own_bound(settings: Settings) -> None:
    from labeler_assist.studio_routes import WEBHOOK_MAX_BYTES

    path = "/integrations/label-studio/webhook"
    client = Client(build_app(settings, ["api", "labeler-assist"]))
    await client.put([(b"content-length", str(WEBHOOK_MAX_BYTES + 1).encode())], path, "POST")
    assert client.status == 413 and client.pulled == 0
    client = Client(build_app(settings, ["api", "labeler-assist"]))
    await client.put([CHUNKED], path, "POST")
    assert client.status == 413 and client.pulled == min(LIMIT, WEBHOOK_MAX_BYTES) // CHUNK + 1
    # every other path of the same app still needs a token first
    client = Client(build_app(settings, ["api", "labeler-assist"]))
    await client.put([CHUNKED])
    assert client.status == 401 and client.pulled == 0
