"""Background server processes with pid files that survive the command that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Daemon:
    """One named background process: its pid file under ``run_dir`` and its log file."""

    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pidfile(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def logfile(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if the recorded process still runs (a recycled pid does not count)."""
        try:
            pid_text, started_text = self.pidfile.read_text().split()
            process = psutil.Process(int(pid_text))
            if abs(process.create_time() - float(started_text)) > 1.0:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return int(process.pid)
        except (FileNotFoundError, ValueError, psutil.Error):
            return None

    def start(self, argv: list[str], *, env: dict[str, str], cwd: Path | None = None) -> int:
        """Start ``argv`` in its own session (it outlives us), logging to :attr:`logfile`."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.logfile.open("ab") as log:
            log.write(
                f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(argv)}\n".encode()
            )
            log.flush()
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        created = psutil.Process(process.pid).create_time()
        self.pidfile.write_text(f"{process.pid} {created}\n")
        return process.pid

    def exited_early(self) -> bool:
        """True when a pid file exists but its process is gone (it crashed while starting)."""
        return self.pidfile.exists() and self.pid() is None

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout_s``; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        try:
            psutil.Process(pid).wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
            psutil.Process(pid).wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        self.pidfile.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""
