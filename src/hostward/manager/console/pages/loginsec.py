"""Intrusion Detection -> Blocked IPs, Installation & Configuration -> Security Configuration (login
whitelist, SSH login IP whitelist per server, common login IPs and locations), and the login-alarm
actions (add to login whitelist, unblock)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.manager.console.listing import list_page
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Next,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
)
from hostward.manager.loginsec import abnormal
from hostward.manager.loginsec import service as loginsec
from hostward.manager.loginsec.models import BLOCK_STATUSES
from hostward.manager.loginsec.netlist import split_items
from hostward.manager.malware import service as malware
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server

router = APIRouter()

Filter = Annotated[str | None, Query(max_length=128)]
CONFIG = PREFIX + "/security-config"


# ---- blocked IPs ----


@router.get("/blocked-ips")
def blocked_ips_page(
    request: Request,
    user: User,
    status: Filter = None,
    service: Filter = None,
    server_id: Filter = None,
    q: Filter = None,
) -> Response:
    filters = {"status": opt(status), "service": opt(service), "server_id": opt(server_id), "q": opt(q)}

    def extras(session: Session, region: str | None, rows: list[tuple[Any, str]]) -> dict[str, Any]:
        return {
            "errors": {r.id: loginsec.unblock_error(session, r) for r, _ in rows},
            "statuses": BLOCK_STATUSES,
            "counts": loginsec.blocked_counts(session, region),
        }

    return list_page(
        request,
        user,
        filters,
        loginsec.list_blocked,
        extras,
        template="blocked_ips.html",
        active="blocked_ips",
        title="Blocked IPs",
    )


@router.post("/blocked-ips/unblock")
def unblock(
    request: Request,
    user: FormOperator,
    ids: Annotated[list[str], Form(max_length=loginsec.MAX_BATCH)] = [],  # noqa: B006
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    wanted = list(dict.fromkeys(i for i in ids if i))
    if not wanted:
        raise Invalid("select at least one blocked IP")
    with ctx.uow() as session:
        outcomes = loginsec.unblock(session, wanted, actor=user.username, now=ctx.clock.now())
    done = sum(1 for o in outcomes if o.ok)
    failed = [o for o in outcomes if not o.ok]
    lines = (
        [f"{done} block{'s' if done != 1 else ''} being lifted; the agents confirm within seconds."]
        if done
        else []
    )
    lines += [f"{o.id[:8]}: {o.error.message if o.error else 'failed'}" for o in failed[:10]]
    return redirect(safe_next(next, PREFIX + "/blocked-ips"), ("error" if failed else "ok", "\n".join(lines)))


# ---- security configuration ----


@router.get("/security-config")
def security_config_page(request: Request, user: User, server_id: Filter = None) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    with ctx.uow() as session:
        stmt = select(Server).order_by(Server.name).limit(1000)
        if region:
            stmt = stmt.where(Server.region == region)
        all_servers = list(session.scalars(stmt))
        names = {s.id: s.name for s in all_servers}
        chosen = session.get(Server, server_id) if opt(server_id) else None
        entries = loginsec.list_login_whitelist(session)
        for entry in entries:
            for sid in entry.server_ids or ():
                if sid not in names:
                    found = session.get(Server, sid)
                    names[sid] = found.name if found else f"{sid[:8]} (deleted)"
        return render(
            request,
            session,
            user,
            "security_config.html",
            active="security_config",
            title="Security Configuration",
            servers=all_servers,
            server_names=names,
            chosen=chosen,
            ssh_entries=loginsec.ssh_whitelist(session, chosen.id) if chosen else [],
            ssh_overview=loginsec.all_ssh_whitelists(session),
            login_entries=entries,
            common_ips=loginsec.common_ips(session),
            common_locations=loginsec.common_locations(session),
            geo=abnormal.geolocation_settings(session),
            auto_isolate_kill=malware.auto_isolate_kill(session),
            limits={
                "login": loginsec.MAX_LOGIN_WHITELIST,
                "ssh": loginsec.MAX_SSH_WHITELIST,
                "ips": loginsec.MAX_COMMON_IPS,
                "locations": loginsec.MAX_COMMON_LOCATIONS,
            },
        )


@router.post("/security-config/login-whitelist")
def add_login_whitelist(
    request: Request,
    user: FormOperator,
    ips: Annotated[str, Form(max_length=10_000)] = "",
    servers_text: Annotated[str, Form(alias="servers", max_length=100_000)] = "",
    username: Annotated[str, Form(max_length=64)] = "",
    remarks: Annotated[str, Form(max_length=1000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        refs = [line.strip() for line in servers_text.replace(",", "\n").splitlines() if line.strip()]
        server_ids = [servers.resolve(session, ref).id for ref in refs] or None
        entry = loginsec.add_login_whitelist(
            session,
            ips=ips,
            server_ids=server_ids,
            username=opt(username),
            remarks=remarks,
            actor=user.username,
            now=ctx.clock.now(),
        )
        text = f"Login whitelist entry added ({entry.ip_text}); agents apply it within seconds."
    return redirect(safe_next(next, CONFIG), ("ok", text))


@router.post("/security-config/login-whitelist/{entry_id}/delete")
def delete_login_whitelist(request: Request, entry_id: str, user: FormOperator, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        loginsec.delete_login_whitelist(session, entry_id, actor=user.username, now=ctx.clock.now())
    return redirect(safe_next(next, CONFIG), ("ok", "Login whitelist entry deleted."))


@router.post("/security-config/ssh-ip/{server_id}")
def change_ssh_whitelist(
    request: Request,
    server_id: str,
    user: FormOperator,
    action: Annotated[str, Form(max_length=16)] = "",
    network: Annotated[str, Form(max_length=100)] = "",
    remarks: Annotated[str, Form(max_length=255)] = "",
    enabled: Annotated[str, Form(max_length=8)] = "",
    next: Next = "",
) -> Response:
    """``add`` one address; ``enable`` / ``disable`` / ``delete`` one entry; ``clear`` the list."""
    ctx = ctx_of(request)
    with ctx.uow() as session:
        current = [
            {"network": e.network, "enabled": e.enabled, "remarks": e.remarks}
            for e in loginsec.ssh_whitelist(session, server_id)
        ]
        target = network.strip()
        if action == "add":
            if not target:
                raise Invalid("give an address or CIDR")
            current.append({"network": target, "enabled": enabled == "on", "remarks": remarks})
        elif action in ("enable", "disable", "delete"):
            match = [c for c in current if c["network"] == target]
            if not match:
                raise Invalid(f"{target or 'this entry'} is not in the SSH login IP whitelist")
            if action == "delete":
                current.remove(match[0])
            else:
                match[0]["enabled"] = action == "enable"
        elif action == "clear":
            current = []
        else:
            raise Invalid("unknown action")
        loginsec.put_ssh_whitelist(session, server_id, current, actor=user.username, now=ctx.clock.now())
        count = sum(1 for c in current if c["enabled"])
    text = (
        f"SSH login IP whitelist saved: SSH only from {count} address{'es' if count != 1 else ''}."
        if count
        else "SSH login IP whitelist saved: no enabled entry, SSH is open to every address."
    )
    return redirect(safe_next(next, f"{CONFIG}?server_id={server_id}"), ("ok", text))


@router.post("/security-config/common-ips")
def save_common_ips(
    request: Request, user: FormOperator, items: Annotated[str, Form(max_length=10_000)] = "", next: Next = ""
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        values = loginsec.put_common_ips(
            session, split_items(items), actor=user.username, now=ctx.clock.now()
        )
    return redirect(safe_next(next, CONFIG), ("ok", f"{len(values)} common login IP(s) saved."))


@router.post("/security-config/common-locations")
def save_common_locations(
    request: Request, user: FormOperator, items: Annotated[str, Form(max_length=10_000)] = "", next: Next = ""
) -> Response:
    ctx = ctx_of(request)
    lines = [line for line in items.replace(";", "\n").splitlines() if line.strip()]
    with ctx.uow() as session:
        values = loginsec.put_common_locations(session, lines, actor=user.username, now=ctx.clock.now())
    return redirect(safe_next(next, CONFIG), ("ok", f"{len(values)} common login location(s) saved."))


# ---- login-alarm actions (from the alarm page) ----


@router.post("/alarms/{alarm_id}/login-action")
def login_alarm_action(
    request: Request,
    alarm_id: str,
    user: FormOperator,
    action: Annotated[str, Form(max_length=40)] = "",
    remark: Annotated[str, Form(max_length=2000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        (outcome,) = loginsec.handle_login_alarms(
            session, [alarm_id], action, remark=remark, actor=user.username, now=ctx.clock.now()
        )
    target = safe_next(next, f"{PREFIX}/alarms/{alarm_id}")
    if not outcome.ok:
        return redirect(target, ("error", outcome.error.message if outcome.error else "refused"))
    text = {
        "add_to_login_whitelist": "Source added to the login whitelist (it stays blocked until unblocked).",
        "remove_from_login_whitelist": "Login whitelist entry removed; the alarm is unhandled again.",
        "unblock": "The source is being unblocked; the agent confirms within seconds.",
    }.get(action, "Done.")
    return redirect(target, ("ok", text))
