"""Helm, built by ``go install`` at a pinned version, for linting and rendering the chart.

Like MinIO (``labelloop/stack/minio.py``), it comes from the Go module proxy rather than a
release download, and is built once into the cache (``~/.cache/labelloop/bin/helm``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from labelloop.stack.base import Progress, StackError, require_tool

HELM_PACKAGE = "helm.sh/helm/v3/cmd/helm"
HELM_VERSION = "v3.22.0"
HELM_KUBE_MINOR = "37"
"""The Kubernetes minor of the client-go that Helm v3.22.0 is built with (k8s.io/* v0.37)."""

# `go install` does not run Helm's Makefile, which stamps these with -X; without them
# `helm version` says "v3.22" and templates see Kubernetes 1.20 when no --kube-version is given.
_LDFLAGS = " ".join(
    [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={HELM_KUBE_MINOR}",
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
        f"-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={HELM_KUBE_MINOR}",
    ]
)


def helm_path(cache_dir: Path) -> Path:
    return cache_dir / "bin" / "helm"


def helm_version(binary: Path) -> str | None:
    """The version ``binary`` reports (``v3.22.0``), or None when it is absent or broken."""
    if not binary.exists():
        return None
    try:
        result = subprocess.run(
            [str(binary), "version", "--template", "{{.Version}}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def ensure_helm(cache_dir: Path, progress: Progress = lambda line: None) -> Path:
    """The pinned Helm binary, built with ``go install`` the first time (about 2 min on 2 cores).

    A binary of another version at that path is rebuilt. The build lands in a scratch folder and
    is moved into place at the end, so an interrupted build never leaves a half-written ``helm``.
    """
    binary = helm_path(cache_dir)
    if helm_version(binary) == HELM_VERSION:
        return binary
    go = require_tool("go", "Install Go 1.24 or newer (https://go.dev/doc/install) to build Helm.")
    progress(f"building Helm {HELM_VERSION} with go install (first time only, ~2 min on 2 cores)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".helm-build-") as scratch:
        result = subprocess.run(
            [go, "install", "-trimpath", "-ldflags", _LDFLAGS, f"{HELM_PACKAGE}@{HELM_VERSION}"],
            env={**os.environ, "GOBIN": scratch, "CGO_ENABLED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        built = Path(scratch) / "helm"
        if result.returncode != 0 or not built.exists():
            raise StackError(
                f"go install {HELM_PACKAGE}@{HELM_VERSION} failed:\n{result.stderr[-3000:]}"
            )
        shutil.move(built, binary)
    version = helm_version(binary)
    if version != HELM_VERSION:
        raise StackError(f"built {binary} reports version {version!r}, not {HELM_VERSION}")
    return binary
