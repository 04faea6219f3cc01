"""Helm is built once into the cache and rebuilt only when its version is not the pinned one."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelloop.stack import helm as helm_tool
from labelloop.stack.base import MissingTool
from tests.deploy.conftest import Helm


def _fake_helm(cache_dir: Path, version: str) -> Path:
    binary = helm_tool.helm_path(cache_dir)
    binary.parent.mkdir(parents=True)
    binary.write_text(f"#!/bin/sh\necho '{version}'\n")
    binary.chmod(0o755)
    return binary


def test_the_built_helm_is_the_pinned_version(helm: Helm) -> None:
    assert helm_tool.helm_version(helm.binary) == helm_tool.HELM_VERSION == "v3.22.0"
    result = helm.run("version", "--template", "{{.Version}} {{.GoVersion}}")
    assert result.stdout.startswith("v3.22.0 go")


def test_a_cached_helm_of_the_pinned_version_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    binary = _fake_helm(tmp_path, helm_tool.HELM_VERSION)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no go: a rebuild would fail
    assert helm_tool.ensure_helm(tmp_path) == binary


def test_a_cached_helm_of_another_version_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_helm(tmp_path, "v3.17.0")
    assert helm_tool.helm_version(helm_tool.helm_path(tmp_path)) == "v3.17.0"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingTool, match="go"):  # it went for `go install`
        helm_tool.ensure_helm(tmp_path)
