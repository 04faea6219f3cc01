"""How a consumer tells a poison message from a dependency that is briefly away."""

from __future__ import annotations

import json

from pydantic import ValidationError
from sqlalchemy.exc import OperationalError


class TransientError(Exception):
    """A dependency (store, database, model server) is unreachable: retry, never dead-letter."""


class PoisonMessage(Exception):
    """The message itself can never be handled: dead-letter it at once."""


def is_transient(error: BaseException) -> bool:
    """Errors worth waiting out: the message is fine, the world around it is not (yet)."""
    if isinstance(error, TransientError | ConnectionError | TimeoutError | OperationalError):
        return True
    try:
        from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
    except ImportError:  # pragma: no cover - urllib3 comes with the minio client
        return False
    return isinstance(error, MaxRetryError | NewConnectionError | ProtocolError)


def is_poison(error: BaseException) -> bool:
    """Errors no retry can fix: undecodable bytes, or a body that fails its schema."""
    return isinstance(
        error, PoisonMessage | ValidationError | json.JSONDecodeError | UnicodeDecodeError
    )
