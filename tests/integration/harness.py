"""Running labelloop's services and webhook receivers for tests, over real sockets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from PIL import Image, ImageDraw

from labelloop.config import Settings
from labelloop.serve import build_app
from labelloop.stack.base import free_port


class ApiServer:
    """Every service in one uvicorn server, on its own thread and event loop, so tests can
    call it with blocking clients."""

    def __init__(self, settings: Settings, services: list[str] | None = None) -> None:
        self.settings = settings.model_copy(update={"api_port": free_port()})
        self.app = build_app(self.settings, services or [])
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.settings.api_port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def start(self, timeout_s: float = 60.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class WebhookReceiver:
    """A real HTTP server: records every request; answers per path from a script of statuses
    (then 200), so tests can make a receiver fail and recover."""

    scripts: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    port: int = 0
    """0: any free port."""

    def __post_init__(self) -> None:
        receiver = self
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    receiver.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    script = receiver.scripts.get(self.path, [])
                    status = script.pop(0) if script else 200
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        return [request for request in self.received if request.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_frames(folder: Path, count: int, *, corrupt: dict[int, str] | None = None) -> list[Path]:
    """Small JPEG frames; ``corrupt`` maps an index to "truncated" or "text"."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"frame_{index:03d}.jpg"
        image = Image.new("RGB", (64, 48), (index * 9 % 255, 40, 90))
        ImageDraw.Draw(image).rectangle([8, 8, 30, 30], fill=(240, 140, 20))
        image.save(path, "JPEG")
        kind = (corrupt or {}).get(index)
        if kind == "truncated":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
        elif kind == "text":
            path.write_text("not an image")
        paths.append(path)
    return paths


def wait_until(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def serve_argv(services: list[str]) -> list[str]:
    """The command line a pod runs for ``services``."""
    argv = [sys.executable, "-m", "labelloop", "serve"]
    for name in services:
        argv += ["--service", name]
    return argv


@contextmanager
def service_process(
    services: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``labelloop serve --service ...`` as its own OS process (a pod, locally)."""
    argv = serve_argv(services)
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_http_ready(url: str, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


class ServiceFleet:
    """Each service as its own OS process (a pod each, as in a cluster), which a test can
    kill with SIGKILL and start again the way a Deployment would."""

    def __init__(self, services: list[str], env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.ports = {name: free_port() for name in services}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: dict[str, list[int]] = {name: [] for name in services}

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def start(self, service: str) -> None:
        env = {**os.environ, **self.env, "LABELLOOP_API_PORT": str(self.ports[service])}
        with (self.logs / f"{service}.log").open("ab") as output:
            self.processes[service] = subprocess.Popen(
                serve_argv([service]), env=env, stdout=output, stderr=subprocess.STDOUT
            )

    def start_all(self, timeout_s: float = 120.0) -> None:
        for service in self.ports:
            self.start(service)
        for service in self.ports:
            assert wait_http_ready(f"{self.url(service)}/readyz", timeout_s), self.log(service)

    def kill(self, service: str) -> None:
        """SIGKILL (nothing runs after it: no shutdown hook, no offset commit), then a restart."""
        process = self.processes[service]
        process.kill()
        self.kills[service].append(process.wait(timeout=30))
        self.start(service)

    def log(self, service: str) -> str:
        return (self.logs / f"{service}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
