"""Server detail page: overview (with edits and agent credentials), asset fingerprints, scans, alarms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from hostward.manager.agentlink import service as agentlink
from hostward.manager.alarms import service as alarms
from hostward.manager.console.pages.servers import idle_by_region
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Next,
    Pager,
    User,
    ctx_of,
    opt,
    redirect,
    render,
    safe_next,
)
from hostward.manager.policies.models import PolicyGroup
from hostward.manager.protection import service as protection
from hostward.manager.scans import service as scans
from hostward.manager.scans.models import SCAN_KINDS
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import ASSET_IMPORTANCE
from hostward.manager.wtp.summary import server_summary as file_protection_summary

router = APIRouter()

TABS = ("overview", "assets", "scans", "alarms")
ASSET_TABS = {
    "accounts": ("Accounts", ("name", "uid", "gid", "home", "shell", "groups", "login_allowed", "root")),
    "ports": ("Open ports", ("protocol", "address", "port", "pid", "process", "exe")),
    "processes": ("Processes", ("pid", "ppid", "user", "exe", "cmdline", "started_at")),
    "packages": ("Software", ("name", "version", "arch", "manager")),
    "autostart": ("Auto-start items", ("name", "type", "path", "user", "sha256")),
    "kernel_modules": ("Kernel modules", ("name", "size", "used_by", "path")),
}


def _matches(item: dict[str, Any], needle: str) -> bool:
    return any(needle in str(v).lower() for v in item.values())


@router.get("/servers/{server_id}")
def server_page(
    request: Request,
    server_id: str,
    user: User,
    tab: Annotated[str, Query(max_length=16)] = "overview",
    cat: Annotated[str, Query(max_length=32)] = "accounts",
    q: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    ctx = ctx_of(request)
    tab = tab if tab in TABS else "overview"
    pager = Pager.of(request)
    values: dict[str, Any] = {"tab": tab, "pager": pager}
    with ctx.uow() as session:
        server = servers.get_server(session, server_id)
        quota = protection.bound_quota(session, server.id)
        values["quota"] = quota
        values["policy_group"] = (
            session.get(PolicyGroup, server.policy_group_id) if server.policy_group_id else None
        )
        values["active_scan"] = scans.active_scan(session, server.id)
        values["alarm_stats"] = alarms.statistics(session, server_id=server.id)
        values["idle"] = idle_by_region(session, {server.region})
        values["enable_editions"] = protection.ENABLE_EDITIONS
        if tab == "overview":
            values["groups"] = [g for g, _ in servers.list_groups(session)]
            values["credentials"] = agentlink.list_credentials(session, server.id)
            values["importances"] = ASSET_IMPORTANCE
            values["file_protection"] = file_protection_summary(session, server.id)
        elif tab == "assets":
            assets = servers.get_assets(session, server.id)
            cat = cat if cat in ASSET_TABS else "accounts"
            items = assets[cat]["items"]
            needle = (opt(q) or "").lower()
            if needle:
                items = [i for i in items if _matches(i, needle)]
            pager.total = len(items)
            values.update(
                cat=cat,
                asset_tabs=ASSET_TABS,
                counts={c: len(assets[c]["items"]) for c in ASSET_TABS},
                collected_at=assets[cat]["collected_at"],
                items=items[pager.offset : pager.offset + pager.size],
                columns=ASSET_TABS[cat][1],
                asset_errors=assets["errors"]["items"],
                q=opt(q) or "",
            )
        elif tab == "scans":
            scan_rows, pager.total = scans.list_scans(
                session, server_id=server.id, offset=pager.offset, limit=pager.size
            )
            values.update(
                scans=[scan for scan, _ in scan_rows],
                scan_kinds=[k for k in SCAN_KINDS if k != "malware_custom"],
            )
        else:
            alarm_rows, pager.total = alarms.list_alarms(
                session, server_id=server.id, offset=pager.offset, limit=pager.size
            )
            values["alarms"] = [alarm for alarm, _ in alarm_rows]
        return render(
            request,
            session,
            user,
            "server_detail.html",
            active="servers",
            title=server.name,
            server=server,
            refresh=tab == "scans" and values["active_scan"] is not None,
            **values,
        )


def _detail(server_id: str, tab: str = "overview") -> str:
    return f"{PREFIX}/servers/{server_id}" + ("" if tab == "overview" else f"?tab={tab}")


@router.post("/servers/{server_id}/edit")
def edit_server(
    request: Request,
    server_id: str,
    user: FormOperator,
    name: Annotated[str, Form(max_length=255)] = "",
    asset_importance: Annotated[str, Form(max_length=16)] = "",
    server_group_id: Annotated[str, Form(max_length=64)] = "",
    labels: Annotated[str, Form(max_length=4000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    changes: dict[str, Any] = {
        "labels": [part.strip() for part in labels.replace("\n", ",").split(",") if part.strip()],
        "server_group_id": opt(server_group_id),
    }
    if opt(name):
        changes["name"] = name
    if opt(asset_importance):
        changes["asset_importance"] = asset_importance
    with ctx.uow() as session:
        servers.update_server(session, server_id, changes, actor=user.username)
    return redirect(safe_next(next, _detail(server_id)), ("ok", "Server details saved."))


@router.post("/servers/{server_id}/delete")
def delete_server(request: Request, server_id: str, user: FormOperator) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        name = servers.get_server(session, server_id).name
        servers.delete_server(session, server_id, actor=user.username)
    return redirect(PREFIX + "/servers", ("ok", f"Server {name} deleted; its quota (if any) is idle again."))


@router.post("/servers/{server_id}/scan")
def scan_now(
    request: Request,
    server_id: str,
    user: FormOperator,
    kind: Annotated[str, Form(max_length=16)] = "full",
    paths: Annotated[str, Form(max_length=100_000)] = "",
) -> Response:
    ctx = ctx_of(request)
    # Custom virus scans: one path per line (commas too); other kinds ignore the box.
    wanted = [p.strip() for p in paths.replace(",", "\n").splitlines() if p.strip()]
    with ctx.uow() as session:
        scans.create_scans(
            session,
            [server_id],
            kind,
            "manual",
            ctx.clock.now(),
            ctx.settings,
            user.username,
            paths=wanted if kind == "malware_custom" else None,
        )
    return redirect(_detail(server_id, "scans"), ("ok", "Scan queued; the agent starts it within seconds."))


@router.post("/servers/{server_id}/scans/{scan_id}/cancel")
def cancel_scan(request: Request, server_id: str, scan_id: str, user: FormOperator) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        scans.cancel_scan(session, scan_id, ctx.clock.now(), user.username)
    return redirect(_detail(server_id, "scans"), ("ok", "Scan cancelled."))


@router.post("/servers/{server_id}/credentials/{cred_id}/revoke")
def revoke_credential(request: Request, server_id: str, cred_id: str, user: FormOperator) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        cred = agentlink.revoke_credential(
            session, server_id, cred_id, now=ctx.clock.now(), actor=user.username
        )
        prefix = cred.key_prefix
    return redirect(
        _detail(server_id),
        ("ok", f"Credential {prefix}… revoked; the agent must be enrolled again to reconnect."),
    )
