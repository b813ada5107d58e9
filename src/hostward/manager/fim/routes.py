"""File integrity monitoring: per-server counts, change records, accept as the new baseline."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.fim import service
from hostward.manager.fim.schemas import (
    AcceptIn,
    AcceptOut,
    FimChangeOut,
    FimHostOut,
    FimStatisticsOut,
    change_out,
)
from hostward.manager.schemas_common import Page, paging
from hostward.manager.servers.models import Server

router = APIRouter(tags=["fim"])

Text = Annotated[str | None, Query(max_length=256)]


def _host_out(row: service.HostRow) -> FimHostOut:
    s = row.server
    return FimHostOut(
        server_id=s.id,
        server_name=s.name,
        region=s.region,
        edition=s.edition,
        agent_status=s.agent_status,
        total=row.total,
        alarmed=row.alarmed,
        package_updates=row.package_updates,
        accepted=row.accepted,
        last_change_at=row.last_change_at,
        last_change_path=row.last_change_path,
    )


@router.get("/fim/statistics", response_model=FimStatisticsOut)
def fim_statistics(_p: Reader, ctx: Ctx, region: Text = None) -> FimStatisticsOut:
    with ctx.uow() as session:
        return FimStatisticsOut(**service.statistics(session, region=region))


@router.get("/fim/hosts", response_model=Page[FimHostOut])
def list_hosts(
    _p: Reader,
    ctx: Ctx,
    region: Text = None,
    q: Text = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[FimHostOut]:
    """Servers with file integrity monitoring: change counts and the last change."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_hosts(session, region=region, q=q, offset=offset, limit=limit)
        return Page(items=[_host_out(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/fim/changes", response_model=Page[FimChangeOut])
def list_changes(
    _p: Reader,
    ctx: Ctx,
    server_id: Text = None,
    region: Text = None,
    action: Text = None,
    classification: Text = None,
    change_type: Text = None,
    q: Text = None,
    since: datetime | None = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[FimChangeOut]:
    """Change records, newest first (``q`` searches the path)."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_changes(
            session,
            server_id=server_id,
            region=region,
            action=action,
            classification=classification,
            change_type=change_type,
            q=q,
            since=since,
            offset=offset,
            limit=limit,
        )
        return Page(items=[change_out(c, n) for c, n in rows], total=total, offset=offset, limit=limit)


@router.get("/fim/changes/{change_id}", response_model=FimChangeOut)
def get_change(change_id: str, _p: Reader, ctx: Ctx) -> FimChangeOut:
    with ctx.uow() as session:
        change = service.get_change(session, change_id)
        server = session.get(Server, change.server_id)
        return change_out(change, server.name if server else "")


@router.post("/fim/accept", response_model=AcceptOut)
def accept(body: AcceptIn, principal: Operator, ctx: Ctx) -> AcceptOut:
    """Accept the current state of the paths as the new baseline (queues ``fim_accept`` for the agent)."""
    with ctx.uow() as session:
        result = service.accept(
            session,
            body.server_id,
            body.paths,
            actor=principal.username,
            now=ctx.clock.now(),
            remark=body.remark,
        )
        return AcceptOut(
            server_id=result.server.id,
            command_id=result.command_id,
            paths=result.paths,
            records_accepted=result.records_accepted,
            alarms_handled=result.alarms_handled,
        )
