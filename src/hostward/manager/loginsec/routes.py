"""Login security API: blocked IPs and unblock, login whitelist, SSH login IP whitelist, common login IPs
and locations, the location source, and the login-alarm actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from hostward.manager.deps import Admin, Ctx, Operator, Reader
from hostward.manager.loginsec import abnormal
from hostward.manager.loginsec import service as loginsec
from hostward.manager.loginsec.models import BlockedIp
from hostward.manager.loginsec.schemas import (
    BlockedIpOut,
    GeolocationIn,
    LoginAlarmActionIn,
    LoginAlarmActionOut,
    LoginAlarmResult,
    LoginWhitelistIn,
    LoginWhitelistOut,
    ResultOut,
    ResultsOut,
    SshEntryOut,
    SshWhitelistIn,
    SshWhitelistOut,
    SshWhitelistRow,
    StringList,
    StringListOut,
    UnblockIn,
)
from hostward.manager.schemas_common import ErrorInfo, Page, paging
from hostward.manager.servers.models import Server

router = APIRouter(tags=["login security"])


def blocked_out(session: Any, row: BlockedIp, server_name: str) -> BlockedIpOut:
    out = BlockedIpOut.model_validate(row)
    out.server_name = server_name
    out.unblock_error = loginsec.unblock_error(session, row)
    return out


@router.get("/blocked-ips", response_model=Page[BlockedIpOut])
def list_blocked_ips(
    _p: Reader,
    ctx: Ctx,
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    service: str | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page[BlockedIpOut]:
    """Blocked source addresses; ``status`` blocked, unblocking or unblocked; ``service`` e.g. sshd."""
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = loginsec.list_blocked(
            session,
            server_id=server_id,
            region=region,
            status=status,
            service=service,
            q=q,
            offset=offset,
            limit=limit,
        )
        items = [blocked_out(session, r, n) for r, n in rows]
        return Page(items=items, total=total, offset=offset, limit=limit)


@router.get("/blocked-ips/statistics")
def blocked_ip_statistics(_p: Reader, ctx: Ctx, region: str | None = None) -> dict[str, int]:
    with ctx.uow() as session:
        return loginsec.blocked_counts(session, region)


@router.post("/blocked-ips/unblock", response_model=ResultsOut)
def unblock_ips(body: UnblockIn, principal: Operator, ctx: Ctx) -> ResultsOut:
    """Lift blocks (HTTP 200 with a result per id; the agent confirms within seconds when online)."""
    with ctx.uow() as session:
        outcomes = loginsec.unblock(session, body.ids, actor=principal.username, now=ctx.clock.now())
    return ResultsOut(
        results=[
            ResultOut(
                id=o.id,
                ok=o.ok,
                error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
            )
            for o in outcomes
        ]
    )


@router.get("/whitelists/login", response_model=list[LoginWhitelistOut])
def list_login_whitelist(_p: Reader, ctx: Ctx, server_id: str | None = None) -> list[LoginWhitelistOut]:
    with ctx.uow() as session:
        return [
            LoginWhitelistOut.model_validate(e) for e in loginsec.list_login_whitelist(session, server_id)
        ]


@router.post("/whitelists/login", response_model=LoginWhitelistOut, status_code=201)
def add_login_whitelist(body: LoginWhitelistIn, principal: Operator, ctx: Ctx) -> LoginWhitelistOut:
    with ctx.uow() as session:
        entry = loginsec.add_login_whitelist(
            session,
            ips=body.ips,
            server_ids=body.server_ids,
            username=body.username,
            remarks=body.remarks,
            actor=principal.username,
            now=ctx.clock.now(),
        )
        return LoginWhitelistOut.model_validate(entry)


@router.delete("/whitelists/login/{entry_id}", status_code=204)
def delete_login_whitelist(entry_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        loginsec.delete_login_whitelist(session, entry_id, actor=principal.username, now=ctx.clock.now())


def _ssh_out(session: Any, server_id: str) -> SshWhitelistOut:
    server = session.get(Server, server_id)
    entries = loginsec.ssh_whitelist(session, server_id)
    return SshWhitelistOut(
        server_id=server_id,
        server_name=server.name if server else "",
        max_entries=loginsec.MAX_SSH_WHITELIST,
        items=[SshEntryOut.model_validate(e) for e in entries],
    )


@router.get("/whitelists/ssh-ip", response_model=list[SshWhitelistRow])
def list_ssh_whitelists(_p: Reader, ctx: Ctx) -> list[SshWhitelistRow]:
    """Every server's SSH login IP whitelist entries."""
    with ctx.uow() as session:
        out = []
        for entry, name in loginsec.all_ssh_whitelists(session):
            row = SshWhitelistRow.model_validate(entry)
            row.server_name = name
            out.append(row)
        return out


@router.get("/servers/{server_id}/ssh-ip-whitelist", response_model=SshWhitelistOut)
def get_ssh_whitelist(server_id: str, _p: Reader, ctx: Ctx) -> SshWhitelistOut:
    with ctx.uow() as session:
        return _ssh_out(session, server_id)


@router.put("/servers/{server_id}/ssh-ip-whitelist", response_model=SshWhitelistOut)
def put_ssh_whitelist(server_id: str, body: SshWhitelistIn, principal: Operator, ctx: Ctx) -> SshWhitelistOut:
    """Replace the server's list (≤10); an empty list lets SSH in from anywhere again."""
    with ctx.uow() as session:
        loginsec.put_ssh_whitelist(
            session,
            server_id,
            [i.model_dump() for i in body.items],
            actor=principal.username,
            now=ctx.clock.now(),
        )
        return _ssh_out(session, server_id)


@router.get("/settings/common-login-ips", response_model=StringListOut)
def get_common_ips(_p: Reader, ctx: Ctx) -> StringListOut:
    with ctx.uow() as session:
        return StringListOut(items=loginsec.common_ips(session), max_items=loginsec.MAX_COMMON_IPS)


@router.put("/settings/common-login-ips", response_model=StringListOut)
def put_common_ips(body: StringList, principal: Operator, ctx: Ctx) -> StringListOut:
    with ctx.uow() as session:
        items = loginsec.put_common_ips(session, body.items, actor=principal.username, now=ctx.clock.now())
        return StringListOut(items=items, max_items=loginsec.MAX_COMMON_IPS)


@router.get("/settings/common-login-locations", response_model=StringListOut)
def get_common_locations(_p: Reader, ctx: Ctx) -> StringListOut:
    with ctx.uow() as session:
        return StringListOut(
            items=loginsec.common_locations(session), max_items=loginsec.MAX_COMMON_LOCATIONS
        )


@router.put("/settings/common-login-locations", response_model=StringListOut)
def put_common_locations(body: StringList, principal: Operator, ctx: Ctx) -> StringListOut:
    with ctx.uow() as session:
        items = loginsec.put_common_locations(
            session, body.items, actor=principal.username, now=ctx.clock.now()
        )
        return StringListOut(items=items, max_items=loginsec.MAX_COMMON_LOCATIONS)


@router.get("/settings/login-geolocation")
def get_geolocation(_p: Reader, ctx: Ctx) -> dict[str, Any]:
    with ctx.uow() as session:
        return abnormal.geolocation_settings(session)


@router.put("/settings/login-geolocation")
def put_geolocation(body: GeolocationIn, principal: Admin, ctx: Ctx) -> dict[str, Any]:
    """Where login locations come from: an ``.mmdb`` database path and a CIDR table for what it lacks."""
    with ctx.uow() as session:
        return abnormal.put_geolocation(
            session,
            body.mmdb_path,
            [r.model_dump() for r in body.table],
            actor=principal.username,
            now=ctx.clock.now(),
        )


@router.post("/alarms/login-actions", response_model=LoginAlarmActionOut)
def login_alarm_actions(body: LoginAlarmActionIn, principal: Operator, ctx: Ctx) -> LoginAlarmActionOut:
    """``add_to_login_whitelist`` (does not unblock), ``remove_from_login_whitelist``, ``unblock``."""
    with ctx.uow() as session:
        outcomes = loginsec.handle_login_alarms(
            session,
            body.alarm_ids,
            body.action,
            remark=body.remark,
            actor=principal.username,
            now=ctx.clock.now(),
        )
    return LoginAlarmActionOut(
        results=[
            LoginAlarmResult(
                alarm_id=o.id,
                ok=o.ok,
                detail=o.detail,
                error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
            )
            for o in outcomes
        ]
    )
