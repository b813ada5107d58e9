"""Enable, disable and switch edition, in batches; each server succeeds or fails on its own."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hostward.manager.deps import Ctx, Operator
from hostward.manager.protection import service
from hostward.manager.schemas_common import ErrorInfo

router = APIRouter(tags=["protection"])


class EnableIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)
    edition: str = Field(pattern="^(basic|enterprise|premium|wtp)$")
    quota_id: str | None = None


class DisableIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)


class SwitchIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=1000)
    edition: str = Field(pattern="^(enterprise|premium)$")


class ProtectionResult(BaseModel):
    server_id: str
    ok: bool
    quota_id: str | None = None
    error: ErrorInfo | None = None


class ProtectionResponse(BaseModel):
    results: list[ProtectionResult]


def _response(outcomes: list[service.Outcome]) -> ProtectionResponse:
    return ProtectionResponse(
        results=[
            ProtectionResult(
                server_id=o.server_id,
                ok=o.ok,
                quota_id=o.quota_id,
                error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
            )
            for o in outcomes
        ]
    )


@router.post("/protection/enable", response_model=ProtectionResponse)
def enable(body: EnableIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    if body.quota_id is not None and len(body.server_ids) != 1:
        from hostward.core.errors import Invalid

        raise Invalid("quota_id can be given only with a single server")
    with ctx.uow() as session:
        outcomes = service.batch(
            session,
            body.server_ids,
            service.enable_one,
            body.edition,
            ctx.clock.now(),
            ctx.settings,
            actor=principal.username,
            quota_id=body.quota_id,
        )
    return _response(outcomes)


@router.post("/protection/disable", response_model=ProtectionResponse)
def disable(body: DisableIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    with ctx.uow() as session:
        outcomes = service.batch(
            session,
            body.server_ids,
            service.disable_one,
            ctx.clock.now(),
            ctx.settings,
            actor=principal.username,
        )
    return _response(outcomes)


@router.post("/protection/switch-edition", response_model=ProtectionResponse)
def switch_edition(body: SwitchIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    with ctx.uow() as session:
        outcomes = service.batch(
            session,
            body.server_ids,
            service.switch_edition_one,
            body.edition,
            ctx.clock.now(),
            ctx.settings,
            actor=principal.username,
        )
    return _response(outcomes)
