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


def test_the_stack_runs_the_s3_server_it_is_told_to(tmp_path: Path) -> None:
    from labelloop.stack.manager import Stack
    from labelloop.stack.versitygw import VersitygwComponent

    settings = Settings(var_dir=tmp_path, stack_s3="versitygw")
    stack = Stack(settings)
    assert isinstance(stack.s3, VersitygwComponent)
    assert [c.name for c in stack.components] == ["kafka", "versitygw"]
    assert settings.s3_event_key_encoding == "raw", "versitygw sends keys as stored"
    assert Settings(var_dir=tmp_path).s3_event_key_encoding == "url"
    argv, env = stack.s3.command()
    assert argv[-2:] == ["posix", str((tmp_path / "versitygw" / "root").resolve())]
    assert argv[argv.index("--event-kafka-topic") + 1] == "storage.objects"
    assert env["ROOT_ACCESS_KEY"] == settings.s3_access_key
    stack.s3.notifications = False
    assert "--event-kafka-url" not in stack.s3.command()[0], "notifications off: no Kafka sink"


def test_minio_sends_each_event_at_once_without_a_queue_store(tmp_path: Path) -> None:
    _, env = MinioComponent(Settings(var_dir=tmp_path)).command()
    assert env["MINIO_NOTIFY_KAFKA_ENABLE_PRIMARY"] == "on"
    assert not any("QUEUE_DIR" in name for name in env), "a queue dir forwards on a 3 s tick"


def test_go_install_builds_into_the_binary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labelloop.stack.base import StackError, go_install

    tools = tmp_path / "tools"
    tools.mkdir()
    fake_go = tools / "go"  # records its arguments and "builds" into GOBIN like go does
    fake_go.write_text(
        '#!/bin/sh\necho "$@ $CGO_ENABLED" > "$GOBIN/args"\n'
        '[ "$2" = "bad@v1" ] && { echo "no such module" >&2; exit 1; }\n'
        'touch "$GOBIN/$(basename "${2%@*}")"\n'
    )
    fake_go.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}:/usr/bin:/bin")
    binary = tmp_path / "bin" / "versitygw-v1" / "versitygw"
    go_install("example.com/x/cmd/versitygw", "v1", binary, needs="1.25")
    assert binary.exists()
    assert (binary.parent / "args").read_text().split() == [
        "install",
        "example.com/x/cmd/versitygw@v1",
        "0",
    ]
    with pytest.raises(StackError, match="no such module"):
        go_install("bad", "v1", tmp_path / "bin" / "bad" / "bad", needs="1.25")


def test_the_test_stack_refuses_a_server_it_did_not_start(tmp_path: Path) -> None:
    """Another checkout's MinIO on our port: the fault tests could not stop it, so refuse it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from labelloop.stack.base import StackError
    from labelloop.stack.manager import Stack

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(var_dir=tmp_path, s3_host="127.0.0.1", s3_port=server.server_port)
        stack = Stack(settings)
        stack.components = [stack.s3]
        assert stack.status()[0].detail == "not started by this stack"
        with pytest.raises(StackError, match="this stack did not start it"):
            stack.up(progress=lambda line: None, adopt_foreign=False)
    finally:
        server.shutdown()
