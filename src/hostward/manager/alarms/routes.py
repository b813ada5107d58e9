"""Alarms: list, show, statistics, handling in batches; alarm whitelist rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from hostward.manager.alarms import service
from hostward.manager.alarms.models import Alarm, AlarmWhitelistRule
from hostward.manager.deps import Ctx, Operator, Reader
from hostward.manager.schemas_common import ApiModel, ErrorInfo, Page, paging

router = APIRouter(tags=["alarms"])


class AlarmOut(ApiModel):
    id: str
    server_id: str
    server_name: str = ""
    event_class: str
    event_type: int
    name: str
    category: str
    severity: str
    attack_phase: str
    title: str
    fingerprint: str
    evidence: dict[str, Any]
    status: str
    handle_action: str | None
    handle_remark: str
    handler: str | None
    handled_at: datetime | None
    whitelist_rule_id: str | None
    first_seen: datetime
    last_seen: datetime
    count: int


class WhitelistSpec(BaseModel):
    field: (
        Literal["file_hash", "file_path", "process_path", "process_cmdline", "login_ip", "username"] | None
    ) = None
    judge: Literal["equal", "contains", "glob"] = "equal"
    value: str | None = Field(default=None, max_length=1024)
    scope: Literal["server", "all"] = "server"
    expires_at: datetime | None = None
    description: str = Field(default="", max_length=1000)


class HandleIn(BaseModel):
    alarm_ids: list[str] = Field(min_length=1, max_length=service.MAX_BATCH)
    action: Literal[
        "mark_as_handled",
        "unhandle",
        "ignore",
        "do_not_ignore",
        "add_to_alarm_whitelist",
        "remove_from_alarm_whitelist",
        "isolate_and_kill",
    ]
    remark: str = Field(default="", max_length=2000)
    whitelist: WhitelistSpec | None = None


class HandleResult(BaseModel):
    alarm_id: str
    ok: bool
    error: ErrorInfo | None = None


class HandleOut(BaseModel):
    results: list[HandleResult]


class RuleOut(ApiModel):
    id: str
    event_class: str | None
    field: str
    judge: str
    value: str
    server_ids: list[str] | None
    expires_at: datetime | None
    description: str
    created_by: str
    created_at: datetime
    hits: int


class RuleIn(BaseModel):
    event_class: str | None = Field(default=None, max_length=64)
    field: Literal["file_hash", "file_path", "process_path", "process_cmdline", "login_ip", "username"]
    judge: Literal["equal", "contains", "glob"] = "equal"
    value: str = Field(min_length=1, max_length=1024)
    server_ids: list[str] | None = Field(default=None, max_length=10000)
    expires_at: datetime | None = None
    description: str = Field(default="", max_length=1000)


def alarm_out(alarm: Alarm, server_name: str = "") -> AlarmOut:
    out = AlarmOut.model_validate(alarm)
    out.server_name = server_name
    return out


@router.get("/alarms", response_model=Page[AlarmOut])
def list_alarms(
    _p: Reader,
    ctx: Ctx,
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    event_class: str | None = None,
    category: str | None = None,
    attack_phase: str | None = None,
    q: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page[AlarmOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_alarms(
            session,
            server_id=server_id,
            region=region,
            status=status,
            severity=severity,
            event_class=event_class,
            category=category,
            attack_phase=attack_phase,
            q=q,
            since=since,
            offset=offset,
            limit=limit,
        )
        return Page(items=[alarm_out(a, n) for a, n in rows], total=total, offset=offset, limit=limit)


@router.get("/alarms/export")
def export_alarms(
    _p: Reader,
    ctx: Ctx,
    format: str = Query(default="csv", pattern="^(csv|json)$"),
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    event_class: str | None = None,
    category: str | None = None,
    attack_phase: str | None = None,
    q: str | None = None,
    since: datetime | None = None,
) -> Response:
    """Download the alarms the filters select (as ``GET /alarms``) as CSV or JSON."""
    from hostward.manager.risk import alarm_export

    with ctx.uow() as session:
        return alarm_export.export(
            session,
            fmt=format,
            now=ctx.clock.now(),
            server_id=server_id,
            region=region,
            status=status,
            severity=severity,
            event_class=event_class,
            category=category,
            attack_phase=attack_phase,
            q=q,
            since=since,
        )


@router.get("/alarms/statistics")
def alarm_statistics(
    _p: Reader, ctx: Ctx, region: str | None = None, server_id: str | None = None
) -> dict[str, Any]:
    with ctx.uow() as session:
        return service.statistics(session, region=region, server_id=server_id)


@router.get("/alarms/{alarm_id}", response_model=AlarmOut)
def get_alarm(alarm_id: str, _p: Reader, ctx: Ctx) -> AlarmOut:
    from hostward.manager.servers.models import Server

    with ctx.uow() as session:
        alarm = service.get_alarm(session, alarm_id)
        server = session.get(Server, alarm.server_id)
        return alarm_out(alarm, server.name if server else "")


@router.post("/alarms/handle", response_model=HandleOut)
def handle_alarms(body: HandleIn, principal: Operator, ctx: Ctx) -> HandleOut:
    with ctx.uow() as session:
        outcomes = service.handle(
            session,
            body.alarm_ids,
            body.action,
            remark=body.remark,
            actor=principal.username,
            now=ctx.clock.now(),
            whitelist=body.whitelist.model_dump(exclude_none=True) if body.whitelist else None,
        )
    return HandleOut(
        results=[
            HandleResult(
                alarm_id=o.alarm_id,
                ok=o.ok,
                error=ErrorInfo(code=o.error.code, message=o.error.message) if o.error else None,
            )
            for o in outcomes
        ]
    )


@router.get("/whitelists/alarm", response_model=list[RuleOut])
def list_rules(_p: Reader, ctx: Ctx) -> list[RuleOut]:
    with ctx.uow() as session:
        return [RuleOut.model_validate(r) for r in service.list_rules(session)]


@router.post("/whitelists/alarm", response_model=RuleOut, status_code=201)
def create_rule(body: RuleIn, principal: Operator, ctx: Ctx) -> RuleOut:
    with ctx.uow() as session:
        rule: AlarmWhitelistRule = service.create_rule(
            session,
            event_class=body.event_class,
            field=body.field,
            judge=body.judge,
            value=body.value,
            server_ids=body.server_ids,
            expires_at=body.expires_at,
            description=body.description,
            actor=principal.username,
            now=ctx.clock.now(),
        )
        return RuleOut.model_validate(rule)


@router.delete("/whitelists/alarm/{rule_id}", status_code=204)
def delete_rule(rule_id: str, principal: Operator, ctx: Ctx) -> None:
    with ctx.uow() as session:
        service.delete_rule(session, rule_id, actor=principal.username)


@router.post("/whitelists/alarm/{rule_id}/apply")
def apply_rule(rule_id: str, principal: Operator, ctx: Ctx) -> dict[str, int]:
    with ctx.uow() as session:
        return {
            "handled": service.apply_rule(session, rule_id, actor=principal.username, now=ctx.clock.now())
        }
