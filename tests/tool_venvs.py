"""Peer tools in venvs of their own: Datumaro (CVAT's dataset library, an independent reader of
exports) and Label Studio (a real one, for the ML backend).

Their pins clash with the project's venv (Datumaro would downgrade pillow and add
opencv-python-headless beside opencv-python; Label Studio pins Django's world), so the tests
install each once into a cached venv outside the checkout and run it under that interpreter:
``tests/datumaro_probe.py`` for Datumaro, ``label-studio start`` for Label Studio.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DATUMARO_VERSION = "1.13.12"
LABEL_STUDIO_VERSION = "1.23.2"

PINS = {"label-studio": ["sentry-sdk>=2.16,<3"]}
"""Held back where a tool's own requirement lets through a release that breaks it: Label Studio
1.23.2 asks for ``sentry-sdk>=2.16`` and passes ``send_default_pii``, which sentry-sdk 3 no
longer takes (it exits at start)."""

_PROBE = Path(__file__).with_name("datumaro_probe.py")
_MARKER = ".labelloop-complete"
_INSTALL_TIMEOUT_S = 1800
_PROBE_TIMEOUT_S = 300


def _venv_dir(package: str, version: str) -> Path:
    """Outside the checkout, so every worktree and CI run on the machine shares one install."""
    return Path.home() / ".cache" / "labelloop" / f"{package}-venv-{version}"


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _run(args: list[str], env: dict[str, str], requirement: str) -> None:
    """Run one install step; its output tail goes into the error, since pip's is long."""
    done = subprocess.run(
        args, capture_output=True, text=True, env=env, timeout=_INSTALL_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"installing {requirement} failed ({' '.join(args)}, "
            f"exit {done.returncode}):\n{_tail(done.stdout + done.stderr)}"
        )


def tool_venv(package: str, version: str) -> Path:
    """The venv holding ``package==version``, made on first use (minutes; later calls are free).

    The marker is written last, so a venv left half-made by an interrupted install is removed and
    made again. A lock beside the venv keeps parallel pytest processes from installing at once.
    """
    venv = _venv_dir(package, version)
    python = venv / "bin" / "python"
    requirements = [f"{package}=={version}", *PINS.get(package, [])]
    requirement = " ".join(requirements)
    marker = venv / _MARKER
    if _made_for(marker, requirement):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock = venv.with_name(venv.name + ".lock")
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if _made_for(marker, requirement):  # another process made it while we waited
                return venv
            shutil.rmtree(venv, ignore_errors=True)
            env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONPATH", None)
            # From a venv's interpreter `-m venv` still makes a venv of the base Python.
            _run([sys.executable, "-m", "venv", str(venv)], env, requirement)
            install = [str(python), "-m", "pip", "install", "--quiet", *requirements]
            _run(install, env, requirement)
            marker.write_text(requirement + "\n")
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return venv


def _made_for(marker: Path, requirement: str) -> bool:
    """Whether the venv is whole and holds these requirements (new pins make it anew)."""
    return marker.is_file() and marker.read_text().strip() == requirement


def datumaro_python() -> Path:
    return tool_venv("datumaro", DATUMARO_VERSION) / "bin" / "python"


def label_studio_command() -> Path:
    """``label-studio``, from its own venv."""
    return tool_venv("label-studio", LABEL_STUDIO_VERSION) / "bin" / "label-studio"


def read_with_datumaro(root: Path, fmt: str) -> dict[str, Any]:
    """What Datumaro reads from the dataset at ``root`` in format ``fmt`` (see the probe)."""
    env = {**os.environ}
    env.pop("PYTHONPATH", None)  # the project's paths must not leak into the other venv
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [str(datumaro_python()), str(_PROBE), fmt, str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=_PROBE_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"Datumaro could not read {root} as {fmt!r} (exit {done.returncode}):\n"
            f"{_tail(done.stderr, 60)}"
        )
    result: dict[str, Any] = json.loads(done.stdout)
    return result
