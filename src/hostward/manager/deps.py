"""FastAPI dependencies: the manager context and the authenticated principal with its role."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from hostward.core.errors import Forbidden, Unauthorized
from hostward.manager.auth import service as auth
from hostward.manager.auth.service import Principal
from hostward.manager.context import ManagerContext

SESSION_COOKIE = "hw_session"


def get_ctx(request: Request) -> ManagerContext:
    ctx: ManagerContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ManagerContext, Depends(get_ctx)]


def bearer_token(request: Request) -> str | None:
    """The API takes bearer tokens only: the console's session cookie is not accepted here, so a
    cross-site request cannot ride on a browser session (the console checks its own CSRF tokens)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_principal(request: Request, ctx: Ctx) -> Principal:
    raw = bearer_token(request)
    if not raw:
        raise Unauthorized("authentication required (Authorization: Bearer <token>)")
    with ctx.uow() as session:
        return auth.resolve_token(session, raw, now=ctx.clock.now())


def require(role: str) -> Callable[[Principal], Principal]:
    def _check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(role):
            raise Forbidden(f"this action needs the {role} role")
        return principal

    return _check


Reader = Annotated[Principal, Depends(require("readonly"))]
Operator = Annotated[Principal, Depends(require("operator"))]
Admin = Annotated[Principal, Depends(require("admin"))]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""
