"""Serving and the API stay light: only a training run imports torch and Ultralytics."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labelloop.config import Settings

SERVICE_MODULES = [
    "labelloop.api.service",
    "ingest.app",
    "jobgen.app",
    "webhooks.app",
    "labeler_assist.app",
    "labeler_assist.preannotation",
    "labeler_assist.detectors",
    "trainer.app",
    "labelloop.serve",
]


def test_services_import_neither_torch_nor_ultralytics() -> None:
    probe = (
        f"import sys, {', '.join(SERVICE_MODULES)}; "
        "print(','.join(m for m in ('torch', 'ultralytics') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "", f"imported: {result.stdout.strip()}"


def test_settings_travel_to_child_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(kafka_topic_prefix="t1.", webhook_max_attempts=3, serve_conf=0.4)
    for name, value in original.as_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
