"""How a consumer tells a poison message from a dependency that is briefly away."""

from __future__ import annotations

import json

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class TransientError(Exception):
    """A dependency (store, database, model server) is unreachable: retry, never dead-letter."""


class PoisonMessage(Exception):
    """The message itself can never be handled: dead-letter it at once."""


class EventTooLarge(ValueError):
    """An event's body exceeds ``event_max_bytes``: the broker would refuse it forever, so it
    is refused where it is made (a request answers 413; a message goes to the DLQ)."""

    def __init__(self, event_type: str, size: int, limit: int) -> None:
        super().__init__(f"{event_type} would be {size:,} bytes; events are at most {limit:,}")
        self.event_type, self.size, self.limit = event_type, size, limit


TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300", "53400"}
)
"""PostgreSQL states worth waiting out, beside class 08 (connection): serialization failure,
deadlock, lock not available, statement timeout, shutdowns, too many connections."""
TRANSIENT_MESSAGES = (
    "database is locked",
    "database table is locked",
    "connection",
    "could not connect",
    "server closed",
    "timeout",
    "timed out",
    "terminating",
    "disk is full",
    "disk i/o error",
)
"""What SQLite and drivers without a SQLSTATE say when the database is busy or away."""


def is_transient_database_error(error: DBAPIError) -> bool:
    """A lock, a timeout or a lost connection: yes. A query that can never run (too many
    parameters, a missing table, a disk full of bad data): no, it goes to the DLQ."""
    if error.connection_invalidated:
        return True
    original = error.orig
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state:
        return str(state).startswith("08") or state in TRANSIENT_SQLSTATES
    message = str(original).lower()
    if "parameter" in message:  # e.g. libpq's "number of parameters must be between 0 and 65535"
        return False
    return any(fragment in message for fragment in TRANSIENT_MESSAGES)


def is_transient(error: BaseException) -> bool:
    """Errors worth waiting out: the message is fine, the world around it is not (yet)."""
    if isinstance(error, TransientError | ConnectionError | TimeoutError | PoolTimeout):
        return True
    if isinstance(error, OperationalError | InterfaceError):
        return is_transient_database_error(error)
    try:
        from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
    except ImportError:  # pragma: no cover - urllib3 comes with the minio client
        return False
    return isinstance(error, MaxRetryError | NewConnectionError | ProtocolError)


def is_poison(error: BaseException) -> bool:
    """Errors no retry can fix: undecodable bytes, or a body that fails its schema."""
    return isinstance(
        error,
        PoisonMessage | EventTooLarge | ValidationError | json.JSONDecodeError | UnicodeDecodeError,
    )
