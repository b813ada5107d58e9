"""Quotas and the auto-bind switch."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hostward.manager.audit import service as audit
from hostward.manager.deps import Admin, Ctx, Operator, Reader
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service
from hostward.manager.quotas.models import Quota
from hostward.manager.schemas_common import Page, paging
from hostward.manager.servers.models import Server
from hostward.manager.settings_store import service as global_settings

router = APIRouter(tags=["quotas"])


class QuotaOut(BaseModel):
    id: str
    edition: str
    region: str
    status: str
    usage: str
    server_id: str | None
    server_name: str | None
    expires_at: datetime | None
    bound_at: datetime | None
    created_at: datetime


class QuotaIn(BaseModel):
    edition: str = Field(pattern="^(basic|enterprise|premium|wtp)$")
    count: int = Field(ge=1, le=service.MAX_ADD)
    expires_at: datetime | None = None
    region: str | None = Field(default=None, max_length=64)


class BindIn(BaseModel):
    server_id: str


class AutoBind(BaseModel):
    enabled: bool
    edition: str | None = Field(default=None, pattern="^(basic|enterprise|premium)$")


def to_out(quota: Quota, server_name: str | None) -> QuotaOut:
    return QuotaOut(
        id=quota.id,
        edition=quota.edition,
        region=quota.region,
        status=quota.status,
        usage=quota.usage,
        server_id=quota.server_id,
        server_name=server_name,
        expires_at=quota.expires_at,
        bound_at=quota.bound_at,
        created_at=quota.created_at,
    )


@router.get("/quotas", response_model=Page[QuotaOut])
def list_quotas(
    _p: Reader,
    ctx: Ctx,
    region: str | None = None,
    edition: str | None = None,
    status: str | None = None,
    usage: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page[QuotaOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_quotas(
            session, region=region, edition=edition, status=status, usage=usage, offset=offset, limit=limit
        )
        return Page(items=[to_out(q, n) for q, n in rows], total=total, offset=offset, limit=limit)


@router.post("/quotas", response_model=Page[QuotaOut], status_code=201)
def add_quotas(body: QuotaIn, principal: Admin, ctx: Ctx) -> Page[QuotaOut]:
    with ctx.uow() as session:
        quotas = service.add_quotas(
            session,
            body.edition,
            body.count,
            expires_at=body.expires_at,
            region=body.region,
            now=ctx.clock.now(),
            settings=ctx.settings,
            actor=principal.username,
        )
        return Page(items=[to_out(q, None) for q in quotas], total=len(quotas), offset=0, limit=len(quotas))


@router.post("/quotas/{quota_id}/bind", response_model=QuotaOut)
def bind(quota_id: str, body: BindIn, principal: Operator, ctx: Ctx) -> QuotaOut:
    with ctx.uow() as session:
        quota = service.get_quota(session, quota_id)
        protection.enable_one(
            session,
            body.server_id,
            quota.edition,
            ctx.clock.now(),
            ctx.settings,
            actor=principal.username,
            quota_id=quota_id,
        )
        server = session.get(Server, body.server_id)
        return to_out(service.get_quota(session, quota_id), server.name if server else None)


@router.post("/quotas/{quota_id}/unbind", response_model=QuotaOut)
def unbind(quota_id: str, principal: Operator, ctx: Ctx) -> QuotaOut:
    """Unbinding changes the quota to idle and turns protection off on its server."""
    with ctx.uow() as session:
        quota = service.get_quota(session, quota_id)
        if quota.server_id is None:
            from hostward.core.errors import Conflict

            raise Conflict("quota is idle")
        protection.disable_one(
            session, quota.server_id, ctx.clock.now(), ctx.settings, actor=principal.username
        )
        return to_out(service.get_quota(session, quota_id), None)


@router.delete("/quotas/{quota_id}", status_code=204)
def delete_quota(quota_id: str, principal: Admin, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_quota(session, quota_id, actor=principal.username)


@router.get("/settings/auto-bind", response_model=AutoBind)
def get_auto_bind(_p: Reader, ctx: Ctx) -> AutoBind:
    with ctx.uow() as session:
        return AutoBind(**(global_settings.get(session, "auto_bind") or {"enabled": False}))


@router.put("/settings/auto-bind", response_model=AutoBind)
def put_auto_bind(body: AutoBind, principal: Admin, ctx: Ctx) -> AutoBind:
    with ctx.uow() as session:
        global_settings.put(session, "auto_bind", body.model_dump(), ctx.clock.now())
        audit.record(
            session,
            principal.username,
            "change_auto_bind",
            target_type="setting",
            target_id="auto_bind",
            **body.model_dump(),
        )
    return body
