"""What every local-stack component provides, and the errors the stack reports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from labelloop.config import Settings
from labelloop.stack.process import Daemon

Progress = Callable[[str], None]
"""Receives one line of human-readable progress ("building MinIO (first time, ~5 min)")."""


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what to do."""


class MissingTool(StackError):
    def __init__(self, tool: str, hint: str) -> None:
        super().__init__(f"`{tool}` was not found on PATH. {hint}")
        self.tool = tool


def require_tool(tool: str, hint: str) -> str:
    """The full path of ``tool``, or a :class:`MissingTool` that names it and how to get it."""
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(tool, hint)
    return path


def go_install(package: str, version: str, binary: Path, *, needs: str) -> None:
    """``go install package@version`` into ``binary``'s folder (static, no cgo)."""
    go = require_tool("go", f"Install Go {needs} or newer (https://go.dev/doc/install).")
    binary.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [go, "install", f"{package}@{version}"],
        env={**os.environ, "GOBIN": str(binary.parent), "CGO_ENABLED": "0"},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not binary.exists():
        raise StackError(f"go install {package}@{version} failed:\n{result.stderr[-3000:]}")


def free_port() -> int:
    """A TCP port nothing listens on now (for a process started right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    version: str | None
    running: bool
    healthy: bool
    pid: int | None
    detail: str = ""


class Component(ABC):
    """A server of the local stack: installed once into the cache, run as a :class:`Daemon`."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = Daemon(self.name, settings.run_dir, settings.log_dir)

    @property
    def data_dir(self) -> Path:
        return self.settings.var_dir / self.name

    @property
    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def install(self, progress: Progress) -> None:
        """Fetch or build the server into the cache (a no-op when it is already there)."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run the server."""

    def prepare(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """One-time set-up of ``data_dir`` before the first start (format storage...)."""

    @abstractmethod
    def healthy(self) -> bool:
        """True when the server answers its real protocol, not just an open port."""

    @abstractmethod
    def version(self) -> str | None: ...

    def after_start(self, progress: Progress) -> None:  # noqa: B027 - optional hook
        """Idempotent configuration once the server is healthy (topics, buckets...)."""

    def status(self) -> ComponentStatus:
        pid = self.daemon.pid()
        healthy = self.healthy()
        return ComponentStatus(
            name=self.name,
            address=self.address,
            version=self.version(),
            running=pid is not None or healthy,
            healthy=healthy,
            pid=pid,
            detail="" if pid is not None or not healthy else "not started by this stack",
        )


class ObjectStoreComponent(Component):
    """The S3 server of the stack (MinIO or versitygw): it publishes to ``storage.objects``."""

    health_path: str
    """Answers 200 once the server takes requests."""

    @property
    def address(self) -> str:
        return self.settings.s3_endpoint

    def healthy(self) -> bool:
        try:
            url = f"http://{self.settings.s3_endpoint}{self.health_path}"
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    @abstractmethod
    def set_notifications(self, enabled: bool) -> None:
        """Switch its event notifications on or off (the fault tests lose them all)."""

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if time.monotonic() > deadline:
                raise StackError(f"{self.name} is not healthy:\n{self.daemon.log_tail()}")
            time.sleep(0.1)
