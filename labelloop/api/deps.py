"""FastAPI dependencies shared by every router: the runtime, a DB session, the caller."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session

from labelloop.auth import Principal, Role, principal_for
from labelloop.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>`")


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with Session(runtime.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def credential(authorization: str) -> str | None:
    """The token an ``Authorization`` header carries: ``Bearer <token>``, or HTTP Basic with
    the token as the password (how Label Studio and other tools send a backend's secret)."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def resolve_principal(runtime: Runtime, session: Session, token: str) -> Principal | None:
    """Who holds ``token``: the settings' admin token, an issued API token, or nobody."""
    if hmac.compare_digest(token.encode(), runtime.settings.admin_token.encode()):
        return Principal(name="admin", role=Role.ADMIN)
    return principal_for(session, token)


def optional_principal(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller, from ``Authorization`` (a token as Bearer, or as a Basic password; see
    :func:`credential`); None without the header; 401 for a credential no token matches."""
    authorization = request.headers.get("authorization", "")
    if not authorization:
        return None
    token = credential(authorization)
    principal = resolve_principal(runtime, session, token) if token else None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    """The caller: the settings' admin token, or an issued API token (see labelloop.auth)."""
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing `Authorization: Bearer <token>` (or Basic, the token as the password)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


OptionalPrincipalDep = Annotated[Principal | None, Depends(optional_principal)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if principal.role is not Role.ADMIN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"needs the admin role ({principal.role})")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]


def task_not_found(task_id: str) -> HTTPException:
    """A missing task and one the caller may not see answer alike (no existence probing)."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no task {task_id}")


def check_read(principal: Principal, task_id: str) -> None:
    if not principal.can_read(task_id):
        raise task_not_found(task_id)


def check_label(principal: Principal, task_id: str) -> None:
    check_read(principal, task_id)
    if not principal.can_label(task_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {principal.role} role cannot label")
