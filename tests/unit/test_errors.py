"""Which failures are waited out and which are dead-lettered."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError

from labelloop.messaging.errors import PoisonMessage, TransientError, is_poison, is_transient


class Model(BaseModel):
    n: int


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
    ],
)
def test_transient(error: BaseException) -> None:
    assert is_transient(error) and not is_poison(error)


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
