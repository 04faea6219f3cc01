"""``labelloop replay`` refuses the live database however its URL is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.db import same_database


def test_one_sqlite_file_under_different_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "var" / "labelloop.db"
    live.parent.mkdir()
    live.touch()
    (tmp_path / "link").symlink_to(live.parent)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{live}"
    for other in (
        "sqlite:///var/labelloop.db",
        "sqlite:///./var/../var/labelloop.db",
        f"sqlite:///{tmp_path}/link/labelloop.db",
    ):
        assert same_database(url, other), other
    assert not same_database(url, f"sqlite:///{tmp_path}/replayed.db")
    assert not same_database("sqlite://", "sqlite://"), "in-memory: never another process's"


def test_one_postgresql_database_under_different_spellings() -> None:
    live = "postgresql://labelloop:pw@localhost/labelloop"
    for other in (
        "postgresql+psycopg://someone@127.0.0.1:5432/labelloop",
        "postgres://labelloop@LOCALHOST:5432/labelloop",
    ):
        assert same_database(live, other), other
    assert not same_database(live, "postgresql://labelloop@localhost/replayed")
    assert not same_database(live, "postgresql://labelloop@localhost:5433/labelloop")
    assert not same_database(live, "sqlite:///labelloop")


def test_replay_refuses_the_live_database_spelled_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = tmp_path / "live.db"
    monkeypatch.setenv("LABELLOOP_DATABASE_URL", f"sqlite:///{live}")
    monkeypatch.chdir(tmp_path)
    from labelloop.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["replay", "--into", "sqlite:///./live.db"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2 and "refusing to replay into the live database" in result.output
