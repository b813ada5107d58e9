"""Web tamper protection API: servers, enable/disable, configuration, directories, events, restore."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.protection.results import (
    ServerResult,
    check_quota_target,
    run_batch,
    server_results,
)
from hostward.manager.schemas_common import Page, paging
from hostward.manager.wtp import service
from hostward.manager.wtp.remote import RemoteBackup
from hostward.manager.wtp.schemas import (
    CommandOut,
    EnableIn,
    PathIn,
    ServerIdsIn,
    WtpConfigIn,
    WtpConfigOut,
    WtpEventOut,
    WtpServerOut,
    WtpStatisticsOut,
)

router = APIRouter(tags=["wtp"])

Text = Annotated[str | None, Query(max_length=256)]


class WtpResult(ServerResult):
    pass


class WtpResponse(BaseModel):
    results: list[WtpResult]


def _response(outcomes: list[service.Outcome]) -> WtpResponse:
    return WtpResponse(results=server_results(outcomes, WtpResult))


def server_out(row: service.ServerRow) -> WtpServerOut:
    s = row.server
    dirs: list[dict[str, Any]] = row.config.get("dirs", [])
    status = row.status
    return WtpServerOut(
        server_id=s.id,
        server_name=s.name,
        region=s.region,
        agent_status=s.agent_status,
        edition=s.edition,
        protection_status=s.protection_status,
        wtp_enabled=row.enabled,
        state=row.state,
        message=str(status.get("message", "")) if row.enabled else "",
        dirs=len(dirs),
        dirs_suspended=sum(1 for d in dirs if d.get("suspended")),
        dirs_status=list(status.get("dirs", [])) if row.enabled else [],
        backup=dict(status.get("backup", {})) if row.enabled else {},
        remote_backup=bool(row.config.get("remote_backup")),
        tamper_count=row.tamper_count,
        last_tamper_at=row.last_tamper_at,
        status_at=row.row.status_at if row.row is not None else None,
    )


def event_out(event: Any, server_name: str) -> WtpEventOut:
    return WtpEventOut.model_validate(event).model_copy(update={"server_name": server_name})


@router.get("/wtp/statistics", response_model=WtpStatisticsOut)
def wtp_statistics(_p: Reader, ctx: Ctx) -> WtpStatisticsOut:
    with ctx.uow() as session:
        return WtpStatisticsOut(**service.statistics(session, ctx.clock.now()))


@router.get("/wtp/servers", response_model=Page[WtpServerOut])
def list_servers(
    _p: Reader,
    ctx: Ctx,
    region: Text = None,
    q: Text = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[WtpServerOut]:
    """Servers with WTP enabled or configured: protection state, directories, static tamper counts."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_servers(session, region=region, q=q, offset=offset, limit=limit)
        return Page(items=[server_out(r) for r in rows], total=total, offset=offset, limit=limit)


@router.get("/wtp/servers/{server_id}", response_model=WtpServerOut)
def get_server(server_id: str, _p: Reader, ctx: Ctx) -> WtpServerOut:
    with ctx.uow() as session:
        return server_out(service.server_row(session, server_id))


@router.post("/wtp/enable", response_model=WtpResponse)
def enable(body: EnableIn, principal: Operator, ctx: Ctx) -> WtpResponse:
    """Bind a wtp quota (``quota_id`` only with one server) and switch protection on."""
    check_quota_target(body.quota_id, body.server_ids)
    return _response(
        run_batch(
            ctx,
            service.batch,
            body.server_ids,
            service.enable_one,
            actor=principal.username,
            quota_id=body.quota_id,
        )
    )


@router.post("/wtp/disable", response_model=WtpResponse)
def disable(body: ServerIdsIn, principal: Operator, ctx: Ctx) -> WtpResponse:
    """Unlock everything and free the quota; the configuration is kept."""
    return _response(
        run_batch(ctx, service.batch, body.server_ids, service.disable_one, actor=principal.username)
    )


@router.get("/wtp/servers/{server_id}/config", response_model=WtpConfigOut)
def get_config(server_id: str, _p: Reader, ctx: Ctx) -> WtpConfigOut:
    with ctx.uow() as session:
        server, config, active = service.config_of(session, server_id)
        return WtpConfigOut(server_id=server.id, enabled=active, **config.model_dump())


@router.put("/wtp/servers/{server_id}/config", response_model=WtpConfigOut)
def put_config(server_id: str, body: WtpConfigIn, principal: Operator, ctx: Ctx) -> WtpConfigOut:
    """Replace the whole configuration (directories, exclusions, backup path, privileged, schedule)."""
    with ctx.uow() as session:
        service.set_config(session, server_id, body, actor=principal.username, now=ctx.clock.now())
        server, config, active = service.config_of(session, server_id)
        return WtpConfigOut(server_id=server.id, enabled=active, **config.model_dump())


@router.post("/wtp/servers/{server_id}/directories/suspend", response_model=WtpConfigOut)
def suspend_dir(server_id: str, body: PathIn, principal: Operator, ctx: Ctx) -> WtpConfigOut:
    return _set_suspended(server_id, body.path, True, principal.username, ctx)


@router.post("/wtp/servers/{server_id}/directories/resume", response_model=WtpConfigOut)
def resume_dir(server_id: str, body: PathIn, principal: Operator, ctx: Ctx) -> WtpConfigOut:
    return _set_suspended(server_id, body.path, False, principal.username, ctx)


def _set_suspended(server_id: str, path: str, suspended: bool, actor: str, ctx: Any) -> WtpConfigOut:
    with ctx.uow() as session:
        service.set_suspended(session, server_id, path, suspended, actor=actor, now=ctx.clock.now())
        server, config, active = service.config_of(session, server_id)
        return WtpConfigOut(server_id=server.id, enabled=active, **config.model_dump())


@router.get("/wtp/events", response_model=Page[WtpEventOut])
def list_events(
    _p: Reader,
    ctx: Ctx,
    server_id: Text = None,
    q: Text = None,
    since: datetime | None = None,
    offset: int = Query(default=0, ge=0),
    limit: int = Query(default=50, ge=1, le=200),
) -> Page[WtpEventOut]:
    """Tamper events, newest first: path, action, outcome, process."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_events(
            session, server_id=server_id, q=q, since=since, offset=offset, limit=limit
        )
        return Page(items=[event_out(e, n) for e, n in rows], total=total, offset=offset, limit=limit)


@router.post("/wtp/servers/{server_id}/restore-remote", response_model=CommandOut)
def restore_remote(server_id: str, body: PathIn, principal: Operator, ctx: Ctx) -> CommandOut:
    """Ask the agent to restore ``path`` from the manager's copy of its backup (``wtp_remote_restore``)."""
    with ctx.uow() as session:
        server = service.get_server(session, server_id)
        known = RemoteBackup(ctx.settings.data_dir, server.id).has_path(body.path)
        command_id = service.queue_remote_restore(
            session, server.id, body.path, known, actor=principal.username, now=ctx.clock.now()
        )
        return CommandOut(server_id=server.id, command_id=command_id)
