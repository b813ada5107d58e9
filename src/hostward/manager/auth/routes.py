"""Login/logout, current user, users (admin) and API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from hostward.core.errors import HostwardError
from hostward.manager.auth import service
from hostward.manager.deps import Admin, Ctx, Reader, client_ip
from hostward.manager.schemas_common import ApiModel

router = APIRouter(tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(ApiModel):
    id: str
    username: str
    role: str
    disabled: bool = False


class LoginOut(BaseModel):
    token: str
    expires_at: datetime | None
    user: UserOut


class UserIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)
    role: str = Field(pattern="^(admin|operator|readonly)$")


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    hours: int | None = Field(default=None, ge=1, le=24 * 3650)


class TokenOut(ApiModel):
    id: str
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str


@router.post("/auth/login", response_model=LoginOut)
def login(body: LoginIn, request: Request, ctx: Ctx) -> LoginOut:
    s = ctx.settings
    failure: HostwardError | None = None
    with ctx.uow() as session:
        # A refusal is caught inside the unit of work so that the failed attempt it recorded is
        # committed: that is what the rate limit counts.
        try:
            raw, token, user = service.login(
                session,
                body.username,
                body.password,
                client_ip=client_ip(request),
                now=ctx.clock.now(),
                max_failures=s.login_max_failures,
                window_s=s.login_failure_window_s,
                session_hours=s.session_hours,
            )
            out = LoginOut(token=raw, expires_at=token.expires_at, user=UserOut.model_validate(user))
        except HostwardError as exc:
            failure = exc
    if failure is not None:
        raise failure
    return out


@router.post("/auth/logout", status_code=204)
def logout(principal: Reader, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.logout(session, principal)


@router.get("/auth/me", response_model=UserOut)
def me(principal: Reader) -> UserOut:
    return UserOut(id=principal.user_id, username=principal.username, role=principal.role)


@router.get("/users", response_model=list[UserOut])
def list_users(_p: Admin, ctx: Ctx) -> list[UserOut]:
    with ctx.uow() as session:
        return [UserOut.model_validate(u) for u in service.list_users(session)]


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserIn, principal: Admin, ctx: Ctx) -> UserOut:
    with ctx.uow() as session:
        user = service.create_user(session, body.username, body.password, body.role, actor=principal.username)
        return UserOut.model_validate(user)


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: str, principal: Admin, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_user(session, user_id, actor=principal.username)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(principal: Reader, ctx: Ctx) -> list[TokenOut]:
    with ctx.uow() as session:
        return [TokenOut.model_validate(t) for t in service.list_api_tokens(session, principal)]


@router.post("/tokens", response_model=TokenCreated, status_code=201)
def create_token(body: TokenIn, principal: Reader, ctx: Ctx) -> TokenCreated:
    expires = ctx.clock.now() + timedelta(hours=body.hours) if body.hours else None
    with ctx.uow() as session:
        raw, token = service.create_api_token(session, principal, body.name, expires_at=expires)
        return TokenCreated(token=raw, **TokenOut.model_validate(token).model_dump())


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, principal: Reader, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.revoke_token(session, principal, token_id)
