"""API tokens: admins issue annotator and auditor tokens, optionally limited to some tasks."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field, model_validator
from sqlmodel import col, select

from labelloop.api.deps import SessionDep, require_admin
from labelloop.auth import ApiToken, Role, issue_token
from labelloop.tasks import PrintableText

router = APIRouter(prefix="/api/tokens", tags=["tokens"], dependencies=[Depends(require_admin)])


class TokenCreate(BaseModel):
    name: PrintableText = Field(min_length=1, max_length=128, description="Who will hold it.")
    role: Role
    task_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Limit it to these tasks (not for admins); leave it out for every task.",
    )

    @model_validator(mode="after")
    def _admins_see_everything(self) -> TokenCreate:
        if self.role is Role.ADMIN and self.task_ids is not None:
            raise ValueError("an admin token cannot be limited to tasks")
        return self


class TokenPublic(BaseModel):
    """A token as listed: never the token itself."""

    id: str
    name: str
    role: Role
    task_ids: list[str] | None
    created_at: datetime
    revoked: bool


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown this once; only its SHA-256 digest is kept.")


@router.post("", status_code=status.HTTP_201_CREATED)
def create_token(body: TokenCreate, session: SessionDep) -> TokenCreated:
    row, token = issue_token(session, body.name, body.role, body.task_ids)
    return TokenCreated(
        **TokenPublic.model_validate(row, from_attributes=True).model_dump(), token=token
    )


@router.get("")
def list_tokens(session: SessionDep) -> list[TokenPublic]:
    rows = session.exec(select(ApiToken).order_by(col(ApiToken.created_at))).all()
    return [TokenPublic.model_validate(row, from_attributes=True) for row in rows]


@router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: str, session: SessionDep) -> None:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    row.revoked = True
    session.add(row)
    session.commit()
