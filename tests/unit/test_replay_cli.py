"""``labelloop replay`` refuses what it cannot do before touching Kafka or a database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from labelloop.cli import app
from labelloop.config import get_settings


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--into", "LIVE"], "refusing to replay into the live database"),
        (["--into", "sqlite:///x.db", "--since", "yesterday"], "is not an ISO 8601 time"),
        (["--into", "sqlite:///x.db", "--topics", "storage.objects"], "unknown topic"),
        (
            ["--into", "sqlite:///x.db", "--since", "2026-11-23T10:00Z", "--until", "2026-11-23"],
            "--until is before --since",
        ),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(arguments: list[str], message: str) -> None:
    live = get_settings().database_url
    argv = ["replay", *(live if a == "LIVE" else a for a in arguments)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
