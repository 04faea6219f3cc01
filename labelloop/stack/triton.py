"""Triton Inference Server, the real ``tritonserver`` binary shipped in the nvidia-pytriton wheel.

Only the wheel's files are used, not PyTriton's Python API. The server runs from a venv of its
own because nvidia-pytriton pins ``numpy<2`` while the rest of labelloop needs numpy 2. Models run
in Triton's Python backend, whose stub embeds the venv's interpreter, so their ``model.py`` sees
that venv's numpy and onnxruntime (the wheel has no ONNX Runtime backend).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelloop.stack.base import Component, Progress, StackError

_VENV_LAYOUT_SCRIPT = """\
import json, sys, sysconfig
print(json.dumps({
    "purelib": sysconfig.get_path("purelib"),
    "libdir": sysconfig.get_config_var("LIBDIR"),
    "shared": bool(sysconfig.get_config_var("Py_ENABLE_SHARED")),
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
}))
"""

# A local request must not go through an http_proxy set in the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class _VenvLayout:
    """Where the triton venv's interpreter keeps its packages and its libpython."""

    purelib: Path
    libdir: Path
    shared: bool
    version: str

    @property
    def pytriton(self) -> Path:
        return self.purelib / "pytriton" / "tritonserver"


class TritonComponent(Component):
    """One ``tritonserver`` in explicit model-control mode; models are loaded over its API."""

    name = "triton"

    @property
    def address(self) -> str:
        s = self.settings
        return f"{s.triton_host}:{s.triton_http_port} (grpc :{s.triton_grpc_port})"

    @property
    def venv_dir(self) -> Path:
        return self.settings.var_dir / "triton-venv"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def backends_dir(self) -> Path:
        return self.data_dir / "backends"

    @property
    def _venv_python(self) -> Path:
        return self.venv_dir / "bin" / "python"

    @property
    def _marker(self) -> Path:
        return self.venv_dir / ".labelloop-complete"

    def install(self, progress: Progress) -> None:
        version = self.settings.triton_pytriton_version
        if self._marker.exists() and self._marker.read_text() == version:
            return
        progress(f"creating the Triton venv at {self.venv_dir}")
        # ``-m venv`` run from a venv's interpreter builds on that venv's base interpreter.
        self._run([sys.executable, "-m", "venv", str(self.venv_dir)], "creating the Triton venv")
        progress(f"installing nvidia-pytriton {version} into it (first time, a few minutes)")
        self._run(
            [
                str(self._venv_python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                f"nvidia-pytriton=={version}",
                "numpy<2",
                "onnxruntime",
            ],
            "pip could not install nvidia-pytriton",
        )
        self._marker.write_text(version)

    def prepare(self, progress: Progress) -> None:
        """Lay out the backend folder Triton expects: the Python backend next to its stub."""
        layout = self._layout()
        if not layout.shared:
            raise StackError(
                f"{self._venv_python} is a Python built without a shared libpython, which Triton's "
                "Python backend stub links; use a Python built with --enable-shared."
            )
        stub = layout.pytriton / "python_backend_stubs" / layout.version
        stub /= "triton_python_backend_stub"
        if not stub.exists():
            raise StackError(
                f"nvidia-pytriton has no Python backend stub for Python {layout.version}"
            )
        backend = self.backends_dir / "python"
        backend.mkdir(parents=True, exist_ok=True)
        for source in [*(layout.pytriton / "backends" / "python").iterdir(), stub]:
            if source.is_file():
                shutil.copy2(source, backend / source.name)
        self.models_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        layout = self._layout()
        argv = [
            str(layout.pytriton / "bin" / "tritonserver"),
            f"--model-repository={self.models_dir.resolve()}",
            "--model-control-mode=explicit",
            # Ready means the server answers: with strict readiness one model that failed to load
            # would mark the whole server unready. Callers check their model with is_model_ready.
            "--strict-readiness=false",
            f"--backend-directory={self.backends_dir.resolve()}",
            # The defaults bind every interface.
            f"--http-address={s.triton_host}",
            f"--http-port={s.triton_http_port}",
            f"--grpc-address={s.triton_host}",
            f"--grpc-port={s.triton_grpc_port}",
            f"--metrics-address={s.triton_host}",
            f"--metrics-port={s.triton_metrics_port}",
            # Otherwise a stop waits up to 30 s for clients to close their connections.
            "--exit-timeout-secs=2",
        ]
        env = dict(os.environ)
        # The stub links libpython and the libcudart bundled in the wheel.
        libs = [str(layout.libdir), str(layout.purelib / "nvidia_pytriton.libs")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*libs, *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        )
        # The stub's embedded Python finds its prefix through ``python3`` on PATH (PYTHONPATH does
        # not reach it), so the venv comes first and models import its numpy<2 and onnxruntime.
        env["PATH"] = os.pathsep.join(
            [str((self.venv_dir / "bin").resolve()), *filter(None, [os.environ.get("PATH")])]
        )
        return argv, env

    def healthy(self) -> bool:
        return self._get("/v2/health/ready") is not None

    def version(self) -> str | None:
        metadata = self._get("/v2")
        version = json.loads(metadata).get("version") if metadata is not None else None
        return str(version) if version else None

    def _get(self, path: str) -> bytes | None:
        """The body of a 200 answer from the HTTP endpoint, None when it is down or not ready."""
        s = self.settings
        url = f"http://{s.triton_host}:{s.triton_http_port}{path}"
        try:
            with _NO_PROXY.open(url, timeout=2) as response:
                body: bytes = response.read()
                return body if response.status == 200 else None
        except OSError:
            return None

    def _layout(self) -> _VenvLayout:
        if not self._marker.exists():
            raise StackError(f"the Triton venv at {self.venv_dir} is not installed yet")
        out = self._run([str(self._venv_python), "-c", _VENV_LAYOUT_SCRIPT], "inspecting the venv")
        values: dict[str, Any] = json.loads(out)
        return _VenvLayout(
            purelib=Path(values["purelib"]),
            libdir=Path(values["libdir"]),
            shared=values["shared"],
            version=values["version"],
        )

    @staticmethod
    def _run(argv: list[str], what: str) -> str:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise StackError(f"{what} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result.stdout
