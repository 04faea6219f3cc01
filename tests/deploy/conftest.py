"""The Helm chart under test: a pinned Helm (built once by ``go install``) and its renders.

Everything here runs offline: ``helm lint`` and ``helm template`` need no cluster, and the
rendered manifests are checked against the Kubernetes schemas ``kubernetes-validate`` ships.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelloop.config import Settings
from labelloop.stack.helm import ensure_helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "labelloop"
PROFILES = {
    "default": CHART / "ci" / "default-values.yaml",
    "gpu": CHART / "ci" / "gpu-values.yaml",
    "scale-to-zero": CHART / "ci" / "scale-to-zero-values.yaml",
    "trainer-cluster": CHART / "ci" / "trainer-cluster-values.yaml",
}
KUBE_VERSION = "1.33.0"
"""The Kubernetes version the chart is rendered for and validated against (one of those
kubernetes-validate ships)."""
RELEASE = "rel"
NAMESPACE = "labelloop"
SERVICES = ("api", "ingest", "jobgen", "webhooks", "labeler-assist", "trainer")
CONSUMERS = ("ingest", "jobgen", "webhooks", "labeler-assist")
"""The services KEDA scales on Kafka lag (and the trainer, on its queue too, where asked)."""


class RenderError(RuntimeError):
    pass


@dataclass(frozen=True)
class Helm:
    binary: Path
    home: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        return subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    def template_args(
        self, profile: str | None, values: dict[str, Any] | None, files: Iterable[Path]
    ) -> list[str]:
        args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
        args += ["--kube-version", KUBE_VERSION]
        if profile is not None:
            args += ["--values", str(PROFILES[profile])]
        for file in files:
            args += ["--values", str(file)]
        for name, value in (values or {}).items():
            if isinstance(value, str):  # --set splits on commas
                args += ["--set-string", f"{name}={value.replace(',', chr(92) + ',')}"]
            else:
                args += ["--set", f"{name}={json.dumps(value)}"]
        return args

    def render(
        self,
        profile: str | None = "default",
        values: dict[str, Any] | None = None,
        files: Iterable[Path] = (),
    ) -> list[dict[str, Any]]:
        """The manifests ``helm template`` renders; :class:`RenderError` when it refuses."""
        result = self.run(*self.template_args(profile, values, files))
        if result.returncode != 0:
            raise RenderError(result.stderr)
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    def render_error(
        self, profile: str | None = "default", values: dict[str, Any] | None = None
    ) -> str:
        """The error of a render that must fail."""
        try:
            self.render(profile, values)
        except RenderError as error:
            return str(error)
        raise AssertionError(f"helm template accepted {values}")


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    binary = ensure_helm(Settings().cache_dir, progress=print)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[dict[str, Any]]]:
    """Each profile's manifests, rendered once per test session."""
    return {profile: helm.render(profile) for profile in PROFILES}


# --- helpers ----------------------------------------------------------------------------------


def name_of(component: str) -> str:
    return f"{RELEASE}-labelloop-{component}"


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The manifests of one kind, by name."""
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def component(manifest: dict[str, Any]) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def pod_specs(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod template's spec (Deployments and Jobs), by workload name."""
    return {
        m["metadata"]["name"]: m["spec"]["template"]["spec"]
        for m in manifests
        if m["kind"] in {"Deployment", "Job"}
    }
