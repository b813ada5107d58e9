"""Servers, server groups, asset fingerprints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.schemas_common import Page, paging
from hostward.manager.servers import service
from hostward.manager.servers.models import Server
from hostward.manager.servers.schemas import ServerGroupIn, ServerGroupOut, ServerIn, ServerOut, ServerPatch

router = APIRouter(tags=["servers"])


def to_out(server: Server, quota_id: str | None) -> ServerOut:
    out = ServerOut.model_validate(server)
    out.quota_id = quota_id
    return out


@router.get("/servers", response_model=Page[ServerOut])
def list_servers(
    _p: Reader,
    ctx: Ctx,
    region: str | None = None,
    edition: str | None = None,
    agent_status: str | None = None,
    protection_status: str | None = None,
    scan_result: str | None = None,
    server_group_id: str | None = None,
    asset_importance: str | None = None,
    label: str | None = None,
    q: str | None = None,
    sort: str = "name",
    offset: int = 0,
    limit: int = 50,
) -> Page[ServerOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_servers(
            session,
            region=region,
            edition=edition,
            agent_status=agent_status,
            protection_status=protection_status,
            scan_result=scan_result,
            server_group_id=server_group_id,
            asset_importance=asset_importance,
            label=label,
            q=q,
            sort=sort,
            offset=offset,
            limit=limit,
        )
        quotas = service.quota_ids(session, [s.id for s in rows])
        return Page(
            items=[to_out(s, quotas.get(s.id)) for s in rows], total=total, offset=offset, limit=limit
        )


@router.get("/servers/statistics")
def server_statistics(_p: Reader, ctx: Ctx, region: str | None = None) -> dict[str, Any]:
    with ctx.uow() as session:
        return service.statistics(session, region)


@router.post("/servers", response_model=ServerOut, status_code=201)
def register_server(body: ServerIn, principal: Operator, ctx: Ctx) -> ServerOut:
    with ctx.uow() as session:
        server = service.register(session, body.name, body.ips, body.region, actor=principal.username)
        return to_out(server, None)


@router.get("/servers/{server_id}", response_model=ServerOut)
def get_server(server_id: str, _p: Reader, ctx: Ctx) -> ServerOut:
    with ctx.uow() as session:
        server = service.get_server(session, server_id)
        return to_out(server, service.quota_ids(session, [server.id]).get(server.id))


@router.patch("/servers/{server_id}", response_model=ServerOut)
def patch_server(server_id: str, body: ServerPatch, principal: Operator, ctx: Ctx) -> ServerOut:
    with ctx.uow() as session:
        server = service.update_server(
            session, server_id, body.model_dump(exclude_unset=True), actor=principal.username
        )
        return to_out(server, service.quota_ids(session, [server.id]).get(server.id))


@router.delete("/servers/{server_id}", status_code=204)
def delete_server(server_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_server(session, server_id, actor=principal.username)


@router.get("/servers/{server_id}/assets")
def server_assets(server_id: str, _p: Reader, ctx: Ctx) -> dict[str, Any]:
    with ctx.uow() as session:
        return service.get_assets(session, server_id)


@router.get("/server-groups", response_model=list[ServerGroupOut])
def list_groups(_p: Reader, ctx: Ctx) -> list[ServerGroupOut]:
    with ctx.uow() as session:
        out = []
        for group, n in service.list_groups(session):
            item = ServerGroupOut.model_validate(group)
            item.servers = n
            out.append(item)
        return out


@router.post("/server-groups", response_model=ServerGroupOut, status_code=201)
def create_group(body: ServerGroupIn, principal: Operator, ctx: Ctx) -> ServerGroupOut:
    with ctx.uow() as session:
        return ServerGroupOut.model_validate(
            service.create_group(session, body.name, actor=principal.username)
        )


@router.delete("/server-groups/{group_id}", status_code=204)
def delete_group(group_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_group(session, group_id, actor=principal.username)
