"""Local-stack plumbing that needs no servers: daemons and tool checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from labelloop.config import Settings
from labelloop.stack.base import MissingTool
from labelloop.stack.kafka import KafkaComponent
from labelloop.stack.minio import MinioComponent
from labelloop.stack.process import Daemon


def test_daemon_outlives_start_and_stops(tmp_path: Path) -> None:
    daemon = Daemon("sleeper", tmp_path / "run", tmp_path / "log")
    assert daemon.pid() is None
    pid = daemon.start(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        env=dict(os.environ),
    )
    assert daemon.pid() == pid
    assert daemon.stop(timeout_s=5) is True
    assert daemon.pid() is None and not daemon.pidfile.exists()
    assert "starting:" in daemon.log_tail()
    assert daemon.stop() is False, "stopping twice is harmless"


def test_stale_pidfile_is_not_a_running_process(tmp_path: Path) -> None:
    daemon = Daemon("ghost", tmp_path / "run", tmp_path / "log")
    daemon.run_dir.mkdir(parents=True)
    daemon.pidfile.write_text(f"{os.getpid()} 1.0\n")  # our pid, but another start time
    assert daemon.pid() is None
    assert daemon.exited_early()


@pytest.mark.parametrize(("component", "tool"), [(KafkaComponent, "java"), (MinioComponent, "go")])
def test_missing_tool_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, component: type, tool: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    settings = Settings(cache_dir=tmp_path / "cache", var_dir=tmp_path / "var")
    with pytest.raises(MissingTool) as caught:
        component(settings).install(progress=lambda line: None)
    assert caught.value.tool == tool
    assert f"`{tool}` was not found" in str(caught.value)
