"""Intrusion Detection -> Alarms (list, statistics, handling, detail) and the alarm whitelist."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.manager.alarms import service as alarms
from hostward.manager.alarms.models import WHITELIST_FIELDS, WHITELIST_JUDGES
from hostward.manager.audit import service as audit
from hostward.manager.console.pages.malware import threat_evidence
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Next,
    Pager,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
)
from hostward.manager.malware import service as malware
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server
from hostward.wire.alarms import SEVERITIES

router = APIRouter()

Filter = Annotated[str | None, Query(max_length=128)]
UNDO = {
    "mark_as_handled": "unhandle",
    "ignore": "do_not_ignore",
    "add_to_alarm_whitelist": "remove_from_alarm_whitelist",
}


@router.get("/alarms")
def alarms_page(
    request: Request,
    user: User,
    status: Filter = None,
    severity: Filter = None,
    event_class: Filter = None,
    attack_phase: Filter = None,
    server_id: Filter = None,
    q: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    filters = {
        "status": opt(status),
        "severity": opt(severity),
        "event_class": opt(event_class),
        "attack_phase": opt(attack_phase),
        "server_id": opt(server_id),
        "q": opt(q),
    }
    with ctx.uow() as session:
        rows, pager.total = alarms.list_alarms(
            session,
            region=region,
            status=filters["status"],
            severity=filters["severity"],
            event_class=filters["event_class"],
            attack_phase=filters["attack_phase"],
            server_id=filters["server_id"],
            q=filters["q"],
            offset=pager.offset,
            limit=pager.size,
        )
        server = session.get(Server, filters["server_id"]) if filters["server_id"] else None
        return render(
            request,
            session,
            user,
            "alarms.html",
            active="alarms",
            title="Alarms",
            rows=rows,
            pager=pager,
            filters=filters,
            filter_server=server,
            severities=SEVERITIES,
            stats=alarms.statistics(session, region=region, server_id=filters["server_id"]),
            whitelist_fields=WHITELIST_FIELDS,
            whitelist_judges=WHITELIST_JUDGES,
            undo=UNDO,
        )


def _whitelist_spec(field: str, judge: str, value: str, scope: str, expires: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"judge": judge or "equal", "scope": "all" if scope == "all" else "server"}
    if opt(field):
        spec["field"] = field
    if opt(value):
        spec["value"] = value.strip()
    if opt(expires):
        spec["expires_at"] = _end_of_day(expires)
    return spec


def _end_of_day(value: str) -> datetime:
    try:
        return datetime.combine(date.fromisoformat(value.strip()), time(23, 59, 59), tzinfo=UTC)
    except ValueError as exc:
        raise Invalid("expiry: a date as YYYY-MM-DD") from exc


@router.post("/alarms/handle")
def handle(
    request: Request,
    user: FormOperator,
    alarm_ids: Annotated[list[str], Form(max_length=alarms.MAX_BATCH)] = [],  # noqa: B006
    action: Annotated[str, Form(max_length=40)] = "",
    remark: Annotated[str, Form(max_length=2000)] = "",
    wl_field: Annotated[str, Form(max_length=32)] = "",
    wl_judge: Annotated[str, Form(max_length=16)] = "",
    wl_value: Annotated[str, Form(max_length=1024)] = "",
    wl_scope: Annotated[str, Form(max_length=16)] = "",
    wl_expires: Annotated[str, Form(max_length=10)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = list(dict.fromkeys(i for i in alarm_ids if i))
    if not ids:
        raise Invalid("select at least one alarm")
    if action in LOGIN_ACTION_VERBS:
        return _login_actions(request, user, ids, action, remark, next)
    whitelist = None
    if action == "add_to_alarm_whitelist":
        whitelist = _whitelist_spec(wl_field, wl_judge, wl_value, wl_scope, wl_expires)
    with ctx.uow() as session:
        outcomes = alarms.handle(
            session, ids, action, remark=remark, actor=user.username, now=ctx.clock.now(), whitelist=whitelist
        )
    ok = sum(1 for o in outcomes if o.ok)
    failed = [o for o in outcomes if not o.ok]
    verb = {
        "mark_as_handled": "marked as handled",
        "ignore": "ignored",
        "add_to_alarm_whitelist": "whitelisted",
        "unhandle": "set back to unhandled",
        "do_not_ignore": "no longer ignored",
        "remove_from_alarm_whitelist": "removed from the whitelist",
        "isolate_and_kill": "being isolated (the agent kills its processes and confirms within seconds)",
    }.get(action, action)
    lines = [f"{ok} alarm{'s' if ok != 1 else ''} {verb}."] if ok else []
    lines += [f"{o.alarm_id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PREFIX + "/alarms"), ("error" if failed else "ok", "\n".join(lines)))


# Brute-force and login alarms (loginsec): offered in the batch menu next to the generic actions.
LOGIN_ACTION_VERBS = {
    "add_to_login_whitelist": "added to the login whitelist (blocked sources stay blocked until unblocked)",
    "remove_from_login_whitelist": "removed from the login whitelist (unhandled again)",
    "unblock": "being unblocked (the agents confirm within seconds)",
}


def _login_actions(
    request: Request, user: FormOperator, ids: list[str], action: str, remark: str, next: str
) -> Response:
    from hostward.manager.loginsec import service as loginsec

    ctx = ctx_of(request)
    with ctx.uow() as session:
        outcomes = loginsec.handle_login_alarms(
            session, ids, action, remark=remark, actor=user.username, now=ctx.clock.now()
        )
    ok = sum(1 for o in outcomes if o.ok)
    failed = [o for o in outcomes if not o.ok]
    lines = [f"{ok} alarm{'s' if ok != 1 else ''}: source {LOGIN_ACTION_VERBS[action]}."] if ok else []
    lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PREFIX + "/alarms"), ("error" if failed else "ok", "\n".join(lines)))


def _evidence_rows(evidence: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(key, text, is_block) for each evidence entry; nested values are shown as indented JSON."""
    rows = []
    for key, value in evidence.items():
        if isinstance(value, dict | list):
            rows.append((key, json.dumps(value, indent=2, ensure_ascii=False, default=str), True))
        else:
            rows.append((key, "" if value is None else str(value), False))
    return rows


@router.get("/alarms/export")
def export_alarms(
    request: Request,
    user: User,
    format: Filter = None,
    status: Filter = None,
    severity: Filter = None,
    event_class: Filter = None,
    attack_phase: Filter = None,
    server_id: Filter = None,
    q: Filter = None,
) -> Response:
    """The alarms the list's filters select, as a CSV or JSON download."""
    from hostward.manager.risk import alarm_export

    ctx = ctx_of(request)
    with ctx.uow() as session:
        return alarm_export.export(
            session,
            fmt=opt(format),
            now=ctx.clock.now(),
            region=current_region(request),
            status=opt(status),
            severity=opt(severity),
            event_class=opt(event_class),
            attack_phase=opt(attack_phase),
            server_id=opt(server_id),
            q=opt(q),
        )


@router.get("/alarms/{alarm_id}")
def alarm_page(request: Request, alarm_id: str, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        alarm = alarms.get_alarm(session, alarm_id)
        server = session.get(Server, alarm.server_id)
        history, _ = audit.list_records(session, target_type="alarm", target_id=alarm.id, limit=50)
        candidates = [(f, alarms.evidence_value(alarm.evidence, f)) for f in WHITELIST_FIELDS]
        isolation = malware.isolation_of(session, alarm)
        return render(
            request,
            session,
            user,
            "alarm_detail.html",
            active="alarms",
            title=alarm.title or alarm.name,
            alarm=alarm,
            server=server,
            evidence=_evidence_rows(alarm.evidence),
            evidence_json=json.dumps(alarm.evidence, indent=2, ensure_ascii=False, default=str),
            history=history,
            undo=UNDO,
            whitelist_fields=WHITELIST_FIELDS,
            whitelist_judges=WHITELIST_JUDGES,
            candidates=[(f, v) for f, v in candidates if v is not None],
            isolation=isolation,
            isolation_status=malware.request_status(session, isolation) if isolation else (None, ""),
            threat=threat_evidence(alarm.evidence),
        )


# ---- alarm whitelist ---------------------------------------------------------------------------------


def _server_names(session: Session, ids: list[str]) -> dict[str, str]:
    out = {}
    for sid in ids:
        server = session.get(Server, sid)
        out[sid] = server.name if server else f"{sid[:8]} (deleted)"
    return out


@router.get("/whitelists/alarm")
def whitelist_page(request: Request, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        rules = alarms.list_rules(session)
        ids = sorted({sid for r in rules for sid in (r.server_ids or [])})
        return render(
            request,
            session,
            user,
            "whitelist.html",
            active="whitelists",
            title="Alarm whitelist",
            rules=rules,
            server_names=_server_names(session, ids),
            now=ctx.clock.now(),
            whitelist_fields=WHITELIST_FIELDS,
            whitelist_judges=WHITELIST_JUDGES,
        )


@router.post("/whitelists/alarm")
def add_rule(
    request: Request,
    user: FormOperator,
    event_class: Annotated[str, Form(max_length=64)] = "",
    field: Annotated[str, Form(max_length=32)] = "",
    judge: Annotated[str, Form(max_length=16)] = "equal",
    value: Annotated[str, Form(max_length=1024)] = "",
    servers_text: Annotated[str, Form(alias="servers", max_length=100_000)] = "",
    expires: Annotated[str, Form(max_length=10)] = "",
    description: Annotated[str, Form(max_length=1000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        refs = [line.strip() for line in servers_text.replace(",", "\n").splitlines() if line.strip()]
        server_ids = [servers.resolve(session, ref).id for ref in refs] or None
        rule = alarms.create_rule(
            session,
            event_class=opt(event_class),
            field=field,
            judge=judge,
            value=value.strip(),
            server_ids=server_ids,
            expires_at=_end_of_day(expires) if opt(expires) else None,
            description=description,
            actor=user.username,
            now=ctx.clock.now(),
        )
        text = (
            f"Whitelist rule added ({rule.field} {rule.judge} {rule.value}). New matching alarms are handled "
            "automatically; use Apply to handle the open ones."
        )
    return redirect(safe_next(next, PREFIX + "/whitelists/alarm"), ("ok", text))


@router.post("/whitelists/alarm/{rule_id}/delete")
def delete_rule(request: Request, rule_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        alarms.delete_rule(session, rule_id, actor=user.username)
    return redirect(
        safe_next(next, PREFIX + "/whitelists/alarm"),
        ("ok", "Rule deleted. Alarms it handled before keep their status."),
    )


@router.post("/whitelists/alarm/{rule_id}/apply")
def apply_rule(request: Request, rule_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        count = alarms.apply_rule(session, rule_id, actor=user.username, now=ctx.clock.now())
    return redirect(
        safe_next(next, PREFIX + "/whitelists/alarm"),
        ("ok", f"Rule applied: {count} open alarm{'s' if count != 1 else ''} handled."),
    )
