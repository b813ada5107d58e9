"""Enable, disable and switch edition, in batches; each server succeeds or fails on its own."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hostward.manager.deps import Ctx, Operator
from hostward.manager.protection import service
from hostward.manager.protection.results import (
    ServerResult,
    check_quota_target,
    run_batch,
    server_results,
)

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


class ProtectionResult(ServerResult):
    pass


class ProtectionResponse(BaseModel):
    results: list[ProtectionResult]


def _response(outcomes: list[service.Outcome]) -> ProtectionResponse:
    return ProtectionResponse(results=server_results(outcomes, ProtectionResult))


@router.post("/protection/enable", response_model=ProtectionResponse)
def enable(body: EnableIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    check_quota_target(body.quota_id, body.server_ids)
    outcomes = run_batch(
        ctx,
        service.batch,
        body.server_ids,
        service.enable_one,
        body.edition,
        actor=principal.username,
        quota_id=body.quota_id,
    )
    return _response(outcomes)


@router.post("/protection/disable", response_model=ProtectionResponse)
def disable(body: DisableIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    return _response(
        run_batch(ctx, service.batch, body.server_ids, service.disable_one, actor=principal.username)
    )


@router.post("/protection/switch-edition", response_model=ProtectionResponse)
def switch_edition(body: SwitchIn, principal: Operator, ctx: Ctx) -> ProtectionResponse:
    outcomes = run_batch(
        ctx,
        service.batch,
        body.server_ids,
        service.switch_edition_one,
        body.edition,
        actor=principal.username,
    )
    return _response(outcomes)
