"""A hostile receiver cannot hold a dispatcher lane: one deadline per attempt, however slowly
it trickles, and the reply's body is never read (real sockets, a local receiver)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from labelloop.config import Settings
from webhooks.dispatcher import Dispatcher
from webhooks.domain import new_secret
from webhooks.models import Delivery, Subscription

Reply = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def trickle(writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\n" * 100:  # a byte every 0.2 s: each read is quick
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def endless_body(writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 10000000000\r\n\r\n"
    )
    chunk = b"x" * 65536
    while True:
        writer.write(chunk)
        await writer.drain()


@pytest.fixture
async def receiver() -> AsyncIterator[Callable[[Reply], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(reply: Reply) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            try:
                await reply(writer)
            except (ConnectionError, OSError):
                pass  # the dispatcher hung up
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    yield start
    for server in servers:
        server.close()


def dispatcher(timeout_s: float) -> Dispatcher:
    settings = Settings(webhook_timeout_s=timeout_s, webhook_allowlist="127.0.0.0/8")
    return Dispatcher(None, settings)  # type: ignore[arg-type]  # _post needs no database


def delivery_to(url: str) -> tuple[Subscription, Delivery]:
    subscription = Subscription(
        id="sub_1", url=url, events=["x"], secret=new_secret(), created_by="test"
    )
    delivery = Delivery(
        id="msg_1",
        subscription_id="sub_1",
        event_id="e1",
        event_type="x",
        payload=b"{}",
        allowed_attempts=3,
    )
    return subscription, delivery


async def test_a_trickling_receiver_meets_one_deadline_for_the_whole_attempt(receiver) -> None:  # type: ignore[no-untyped-def]
    url = await receiver(trickle)
    subscription, delivery = delivery_to(url)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=1.0) as client:  # no single read waits 1 s
        with pytest.raises(TimeoutError):
            await dispatcher(1.0)._post(client, subscription, delivery)
    assert time.monotonic() - started < 2.0


async def test_a_receivers_reply_body_is_never_read(receiver) -> None:  # type: ignore[no-untyped-def]
    url = await receiver(endless_body)
    subscription, delivery = delivery_to(url)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5.0) as client:
        status, retry_after = await dispatcher(5.0)._post(client, subscription, delivery)
    assert (status, retry_after) == (503, 7.0)
    assert time.monotonic() - started < 1.0, "it did not wait for 10 GB"
