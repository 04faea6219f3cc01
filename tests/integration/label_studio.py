"""A real Label Studio (from PyPI, in its own venv), started and stopped by the tests, and the
few calls of its REST API the tests make as its users would."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.tool_venvs import label_studio_command

START_TIMEOUT_S = 240.0
EMAIL = "owner@labelloop.test"


class LabelStudioServer:
    """``label-studio start`` on 127.0.0.1, its data in a directory of the test run's own.

    Local-network calls are allowed (``ML_BLOCK_LOCAL_IP``, ``SSRF_PROTECTION_ENABLED``: the
    backend and its webhook are on 127.0.0.1) and the legacy ``Token`` header is on, as
    ``/setup`` hands the backend the owner's legacy token.
    """

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.token = secrets.token_hex(20)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "label-studio.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = label_studio_command()  # installs it once (minutes), then cached
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(
            LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
            ML_BLOCK_LOCAL_IP="false",
            SSRF_PROTECTION_ENABLED="false",
            LABEL_STUDIO_HOST=self.url,
        )
        argv = [str(command), "start", "--no-browser", "--port", str(self.port)]
        argv += ["--internal-host", "127.0.0.1", "--data-dir", str(self.data_dir / "data")]
        argv += ["--username", EMAIL, "--password", secrets.token_hex(12)]
        argv += ["--user-token", self.token]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited {self.process.returncode}:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"label-studio did not answer /health in {START_TIMEOUT_S} s")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {self.token}"}, timeout=60
        )


def rectangle(box: Any, width: int, height: int, label_control: str = "label") -> dict[str, Any]:
    """A labelloop-style box (pixels) as a Label Studio result (percent), as its UI saves it."""
    return {
        "type": "rectanglelabels",
        "from_name": label_control,
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100 * box.x / width,
            "y": 100 * box.y / height,
            "width": 100 * box.w / width,
            "height": 100 * box.h / height,
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
    }
