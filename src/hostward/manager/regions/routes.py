"""Regions."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hostward.manager.audit import service as audit
from hostward.manager.deps import Admin, Ctx, Reader
from hostward.manager.regions import service
from hostward.manager.schemas_common import ApiModel

router = APIRouter(tags=["regions"])


class RegionOut(ApiModel):
    name: str
    created_at: datetime


class RegionIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)


@router.get("/regions", response_model=list[RegionOut])
def list_regions(_p: Reader, ctx: Ctx) -> list[RegionOut]:
    with ctx.uow() as session:
        return [RegionOut.model_validate(r) for r in service.list_regions(session)]


@router.post("/regions", response_model=RegionOut, status_code=201)
def create_region(body: RegionIn, principal: Admin, ctx: Ctx) -> RegionOut:
    with ctx.uow() as session:
        name = service.ensure(session, body.name)
        audit.record(
            session, principal.username, "add_region", target_type="region", target_id=name, target_name=name
        )
        session.flush()
        return RegionOut.model_validate(next(r for r in service.list_regions(session) if r.name == name))
