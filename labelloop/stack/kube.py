"""A real Kubernetes API server for judging the Helm chart: ``kube-apiserver`` built from the Go
module proxy at a pinned version, and Debian's ``etcd`` beside it; CRDs from their projects'
Go modules (KEDA's, the Prometheus Operator's).

``go install k8s.io/kubernetes/cmd/kube-apiserver@…`` is refused (the module has replace
directives), so a small module of our own requires ``k8s.io/kubernetes`` with the same
replacements its go.mod makes for its staging modules (``k8s.io/X => k8s.io/X v0.<minor>``) and
calls the server's own command. Built once into the cache (``~/.cache/labelloop/bin``), like
Helm (:mod:`labelloop.stack.helm`): minutes on 2 cores the first time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from labelloop.stack.base import Progress, StackError, require_tool

KUBERNETES_VERSION = "v1.35.4"
STAGING_VERSION = "v0.35.4"
"""The version k8s.io/kubernetes' staging modules (k8s.io/api, apiserver, ...) carry."""
ETCD_PACKAGE = "etcd-server"
"""Debian's package with ``/usr/bin/etcd`` (3.4 in bookworm); unpacked, never installed."""
KEDA_MODULE = "github.com/kedacore/keda/v2@v2.17.2"
KEDA_CRDS = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")
"""Under ``config/crd/bases`` of KEDA's module: what the chart renders."""
PROMETHEUS_OPERATOR_MODULE = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
PROMETHEUS_OPERATOR_CRDS = ("monitoring.coreos.com_servicemonitors.yaml",)
"""Under ``example/prometheus-operator-crd`` of the Prometheus Operator's module."""

_MAIN = """package main

import (
\t"os"

\t"k8s.io/component-base/cli"
\t"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
\tos.Exit(cli.Run(app.NewAPIServerCommand()))
}
"""
_STAGING = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.MULTILINE)


def apiserver_path(cache_dir: Path) -> Path:
    return cache_dir / "bin" / f"kube-apiserver-{KUBERNETES_VERSION}"


def _reports(binary: Path, args: list[str], expected: str) -> bool:
    if not binary.exists():
        return False
    try:
        result = subprocess.run(
            [str(binary), *args], capture_output=True, text=True, check=False, timeout=60
        )
    except OSError:
        return False
    return result.returncode == 0 and expected in result.stdout


def _go() -> str:
    return require_tool("go", "Install Go 1.24 or newer (https://go.dev/doc/install).")


def _module_dir(module: str) -> dict[str, str]:
    """``go mod download -json`` of ``module@version``: its folder and go.mod in the cache."""
    result = subprocess.run(
        [_go(), "mod", "download", "-json", module],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if result.returncode != 0:
        raise StackError(f"go mod download {module} failed:\n{result.stderr[-2000:]}")
    found: dict[str, str] = json.loads(result.stdout)
    return found


def staging_replacements() -> list[str]:
    """``k8s.io/X => k8s.io/X <staging version>`` for each staging module k8s.io/kubernetes
    replaces with its own folder."""
    go_mod = Path(_module_dir(f"k8s.io/kubernetes@{KUBERNETES_VERSION}")["GoMod"]).read_text()
    return [f"{name} => {name} {STAGING_VERSION}" for name in _STAGING.findall(go_mod)]


def ensure_apiserver(cache_dir: Path, progress: Progress = lambda line: None) -> Path:
    """The pinned ``kube-apiserver``, built the first time; moved into place only when whole."""
    binary = apiserver_path(cache_dir)
    if _reports(binary, ["--version"], f"Kubernetes {KUBERNETES_VERSION}"):
        return binary
    go = _go()
    progress(f"building kube-apiserver {KUBERNETES_VERSION} (first time only: minutes)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=binary.parent, prefix=".kube-build-") as scratch:
        folder = Path(scratch)
        replaces = "\n".join(f"\t{line}" for line in staging_replacements())
        (folder / "go.mod").write_text(
            f"module labelloop.local/kube-apiserver\n\ngo 1.24\n\n"
            f"require k8s.io/kubernetes {KUBERNETES_VERSION}\n\nreplace (\n{replaces}\n)\n"
        )
        (folder / "main.go").write_text(_MAIN)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
        stamp = f"-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}"
        for step in (
            [go, "mod", "tidy"],
            [go, "build", "-trimpath", "-ldflags", stamp, "-o", "kube-apiserver", "."],
        ):
            result = subprocess.run(
                step, cwd=folder, env=env, capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise StackError(f"{' '.join(step[:2])} failed:\n{result.stderr[-3000:]}")
        shutil.move(folder / "kube-apiserver", binary)
    if not _reports(binary, ["--version"], f"Kubernetes {KUBERNETES_VERSION}"):
        raise StackError(f"built {binary} does not report Kubernetes {KUBERNETES_VERSION}")
    return binary


def ensure_etcd(cache_dir: Path, progress: Progress = lambda line: None) -> Path:
    """Debian's ``etcd``, unpacked from its package (``apt-get download``) into the cache."""
    binary = cache_dir / "bin" / "etcd"
    if _reports(binary, ["--version"], "etcd Version"):
        return binary
    apt = require_tool("apt-get", "etcd comes from Debian's etcd-server package.")
    dpkg = require_tool("dpkg", "etcd comes from Debian's etcd-server package.")
    progress("fetching Debian's etcd-server package")
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labelloop-etcd-") as scratch:
        folder = Path(scratch)
        folder.chmod(0o755)
        download = [apt, "download", ETCD_PACKAGE]
        if subprocess.run(download, cwd=folder, capture_output=True, check=False).returncode:
            subprocess.run([apt, "update", "-q"], capture_output=True, check=False)  # stale lists
            subprocess.run(download, cwd=folder, capture_output=True, check=False)
        packages = list(folder.glob("etcd-server_*.deb"))
        if not packages:
            raise StackError(f"apt-get download {ETCD_PACKAGE} failed")
        subprocess.run([dpkg, "-x", str(packages[0]), str(folder / "root")], check=True)
        shutil.copy2(folder / "root" / "usr" / "bin" / "etcd", binary)
    return binary


def crd_files() -> list[Path]:
    """The CRDs the chart's manifests need, from the pinned modules of their projects."""
    keda = Path(_module_dir(KEDA_MODULE)["Dir"]) / "config" / "crd" / "bases"
    operator = Path(_module_dir(PROMETHEUS_OPERATOR_MODULE)["Dir"])
    files = [keda / name for name in KEDA_CRDS]
    files += [
        operator / "example" / "prometheus-operator-crd" / n for n in PROMETHEUS_OPERATOR_CRDS
    ]
    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        raise StackError(f"CRD files not found in their modules: {missing}")
    return files
