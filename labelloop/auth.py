"""API tokens with roles, and what each role may do with which task.

Roles: ``admin`` (everything: tasks, uploads, webhooks, tokens), ``annotator`` (read its tasks
and label their jobs), ``auditor`` (read-only). An annotator or auditor token may be limited to
some tasks; outside them a task looks exactly like a missing one (404), so a token cannot probe
which tasks exist. Tokens are random (``llt_`` + 32 bytes), shown once, and stored as SHA-256
digests; the settings' admin token bootstraps the first ones.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column
from sqlmodel import Field, Session, SQLModel, select

from schemas.envelope import utcnow

TOKEN_PREFIX = "llt_"  # noqa: S105 - a marker, not a secret


class Role(StrEnum):
    ADMIN = "admin"
    ANNOTATOR = "annotator"
    AUDITOR = "auditor"


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=128, description="Who holds it (shown in audits as the actor).")
    role: str = Field(max_length=16)
    task_ids: list[str] | None = Field(
        default=None, sa_column=Column(JSON), description="Tasks it may see; null: every task."
    )
    digest: str = Field(unique=True, max_length=64, description="SHA-256 of the token.")
    created_at: datetime = Field(default_factory=utcnow)
    revoked: bool = False


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may touch."""

    name: str
    role: Role
    task_ids: frozenset[str] | None = None
    """The tasks this caller may see; None: every task."""

    @property
    def readable(self) -> frozenset[str] | None:
        """The tasks this caller may read; None: every task (an admin reads every task)."""
        return None if self.role is Role.ADMIN else self.task_ids

    def can_read(self, task_id: str) -> bool:
        return self.readable is None or task_id in self.readable

    def can_label(self, task_id: str) -> bool:
        return self.role is Role.ADMIN or (self.role is Role.ANNOTATOR and self.can_read(task_id))


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session, name: str, role: Role, task_ids: list[str] | None = None
) -> tuple[ApiToken, str]:
    """A new token row and the token itself (returned this once, never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        id="tok_" + uuid.uuid4().hex,
        name=name,
        role=role.value,
        task_ids=sorted(set(task_ids)) if task_ids is not None else None,  # [] reads nothing
        digest=digest(token),
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return row, token


def principal_for(session: Session, token: str) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = session.exec(select(ApiToken).where(ApiToken.digest == digest(token))).first()
    if row is None or row.revoked:
        return None
    scope = frozenset(row.task_ids) if row.task_ids is not None else None
    return Principal(name=row.name, role=Role(row.role), task_ids=scope)
