"""Policy groups: list, show, copy, change a policy, delete, apply to servers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.policies import service
from hostward.manager.policies.models import PolicyGroup
from hostward.manager.policies.registry import POLICY_SPECS

router = APIRouter(tags=["policies"])


class PolicyOut(BaseModel):
    key: str
    title: str
    description: str
    enabled: bool
    settings: dict[str, Any]
    settings_schema: dict[str, Any]


class GroupOut(BaseModel):
    id: str
    name: str
    description: str
    edition: str
    os: str
    is_default: bool
    view_only: bool
    copyable: bool
    deletable: bool
    version: int
    host_num: int
    created_at: datetime
    policies: list[PolicyOut]


class CopyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=1000)


class PolicyPatch(BaseModel):
    enabled: bool | None = None
    settings: dict[str, Any] | None = None


class ApplyIn(BaseModel):
    server_ids: list[str] = Field(min_length=1, max_length=10000)


def to_out(group: PolicyGroup, host_num: int) -> GroupOut:
    policies = []
    for p in group.policies:
        spec = POLICY_SPECS.get(p.key)
        policies.append(
            PolicyOut(
                key=p.key,
                title=spec.title if spec else p.key,
                description=spec.description if spec else "",
                enabled=p.enabled,
                settings=p.settings,
                settings_schema=spec.settings_model.model_json_schema() if spec else {},
            )
        )
    return GroupOut(
        id=group.id,
        name=group.name,
        description=group.description,
        edition=group.edition,
        os=group.os,
        is_default=group.is_default,
        view_only=group.view_only,
        copyable=group.copyable,
        deletable=not group.is_default and host_num == 0,
        version=group.version,
        host_num=host_num,
        created_at=group.created_at,
        policies=policies,
    )


@router.get("/policy-groups", response_model=list[GroupOut])
def list_groups(_p: Reader, ctx: Ctx) -> list[GroupOut]:
    with ctx.uow() as session:
        return [to_out(g, n) for g, n in service.list_groups(session)]


@router.get("/policy-groups/{group_id}", response_model=GroupOut)
def get_group(group_id: str, _p: Reader, ctx: Ctx) -> GroupOut:
    with ctx.uow() as session:
        return to_out(service.get_group(session, group_id), service.host_count(session, group_id))


@router.post("/policy-groups/{group_id}/copy", response_model=GroupOut, status_code=201)
def copy_group(group_id: str, body: CopyIn, principal: Operator, ctx: Ctx) -> GroupOut:
    with ctx.uow() as session:
        group = service.copy_group(session, group_id, body.name, body.description, actor=principal.username)
        return to_out(group, 0)


@router.patch("/policy-groups/{group_id}/policies/{key}", response_model=GroupOut)
def patch_policy(group_id: str, key: str, body: PolicyPatch, principal: Operator, ctx: Ctx) -> GroupOut:
    with ctx.uow() as session:
        service.update_policy(
            session, group_id, key, enabled=body.enabled, settings=body.settings, actor=principal.username
        )
        return to_out(service.get_group(session, group_id), service.host_count(session, group_id))


@router.delete("/policy-groups/{group_id}", status_code=204)
def delete_group(group_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_group(session, group_id, actor=principal.username)


@router.post("/policy-groups/{group_id}/apply", response_model=GroupOut)
def apply_group(group_id: str, body: ApplyIn, principal: Operator, ctx: Ctx) -> GroupOut:
    with ctx.uow() as session:
        service.apply_group(session, group_id, body.server_ids, actor=principal.username)
        return to_out(service.get_group(session, group_id), service.host_count(session, group_id))
