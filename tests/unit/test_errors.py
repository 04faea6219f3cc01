"""Which failures are waited out and which are dead-lettered."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError

from labelloop.messaging.errors import PoisonMessage, TransientError, is_poison, is_transient


class Model(BaseModel):
    n: int


class StateError(Exception):
    """A driver error carrying its SQLSTATE, as psycopg's do."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Model.model_validate({"n": "x"})
    return caught.value


@pytest.mark.parametrize(
    "error",
    [
        TransientError("s3 down"),
        ConnectionRefusedError(),
        TimeoutError(),
        OperationalError("select 1", {}, Exception("database is locked")),
        OperationalError("select 1", {}, Exception("connection to server at 10.0.0.9 failed")),
        OperationalError("select 1", {}, StateError("deadlock detected", "40P01")),
        OperationalError("select 1", {}, StateError("terminating connection", "57P01")),
        OperationalError("select 1", {}, StateError("server closed the connection", "08006")),
    ],
)
def test_transient(error: BaseException) -> None:
    assert is_transient(error) and not is_poison(error)


@pytest.mark.parametrize(
    "error",
    [
        # libpq refuses before sending: retrying can never help
        OperationalError(
            "select", {}, Exception("number of parameters must be between 0 and 65535")
        ),
        OperationalError("select", {}, Exception("too many SQL variables")),
        OperationalError("select", {}, Exception("no such table: frames")),
        OperationalError("select", {}, StateError("program limit exceeded", "54000")),
    ],
)
def test_deterministic_database_errors_are_not_waited_out(error: BaseException) -> None:
    """They reach the DLQ after the usual attempts instead of stalling their partition."""
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        PoisonMessage("bad"),
        json.JSONDecodeError("x", "doc", 0),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
    ],
)
def test_poison(error: BaseException) -> None:
    assert is_poison(error) and not is_transient(error)


def test_validation_error_is_poison() -> None:
    assert is_poison(validation_error())


def test_bug_is_neither() -> None:
    error = RuntimeError("bug")
    assert not is_poison(error) and not is_transient(error)
