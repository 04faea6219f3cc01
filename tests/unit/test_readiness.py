"""``/readyz`` is unauthenticated: however often it is asked, its checks run once per window."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

import labelloop.api.app as app_module
from labelloop.api.app import Readiness
from labelloop.db import get_engine


async def test_a_flood_of_readiness_probes_opens_one_broker_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    async def reachable(servers: str) -> bool:
        opened.append(servers)
        await asyncio.sleep(0.05)  # a real admin connection takes a while
        return True

    monkeypatch.setattr(app_module, "cluster_reachable_async", reachable)
    runtime = SimpleNamespace(
        settings=SimpleNamespace(kafka_bootstrap_servers="127.0.0.1:1"),
        engine=get_engine(f"sqlite:///{tmp_path}/ready.db"),
    )
    readiness = Readiness(runtime)  # type: ignore[arg-type]
    answers = await asyncio.gather(*(readiness.checks() for _ in range(200)))
    assert answers[0] == {"kafka": True, "database": True}
    assert all(answer == answers[0] for answer in answers)
    assert len(opened) == 1 and readiness.runs == 1
    monkeypatch.setattr(app_module, "READY_CACHE_S", 0.0)  # the window has passed
    await readiness.checks()
    assert len(opened) == 2
