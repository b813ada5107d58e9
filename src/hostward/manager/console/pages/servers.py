"""Servers & Quota -> Servers tab: filtered, paged list; enable (dialog), disable, switch edition."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Invalid
from hostward.manager.console.web import (
    PREFIX,
    FormOperator,
    Pager,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
    sort_url,
)
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.servers import service as servers
from hostward.manager.servers.models import Server

router = APIRouter()

Filter = Annotated[str | None, Query(max_length=128)]
ServerIds = Annotated[list[str], Form(max_length=1000)]
MAX_BATCH = 1000


def idle_by_region(session: Session, region_names: set[str]) -> dict[str, dict[str, int]]:
    """Idle quotas per region and edition, for the Enable dialog."""
    out: dict[str, dict[str, int]] = {}
    for name in sorted(region_names):
        summary = quotas.usage_summary(session, name)
        out[name] = {edition: row["idle"] for edition, row in summary.items()}
    return out


@router.get("/servers")
def servers_page(
    request: Request,
    user: User,
    edition: Filter = None,
    agent_status: Filter = None,
    protection_status: Filter = None,
    scan_result: Filter = None,
    asset_importance: Filter = None,
    group: Filter = None,
    label: Filter = None,
    q: Filter = None,
    sort: Annotated[str, Query(max_length=32)] = "name",
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    if sort not in servers.SORTS:
        sort = "name"
    filters = {
        "edition": opt(edition),
        "agent_status": opt(agent_status),
        "protection_status": opt(protection_status),
        "scan_result": opt(scan_result),
        "asset_importance": opt(asset_importance),
        "group": opt(group),
        "label": opt(label),
        "q": opt(q),
    }
    with ctx.uow() as session:
        rows, pager.total = servers.list_servers(
            session,
            region=region,
            edition=filters["edition"],
            agent_status=filters["agent_status"],
            protection_status=filters["protection_status"],
            scan_result=filters["scan_result"],
            asset_importance=filters["asset_importance"],
            server_group_id=filters["group"],
            label=filters["label"],
            q=filters["q"],
            sort=sort,
            offset=pager.offset,
            limit=pager.size,
        )
        groups = servers.list_groups(session)
        group_names = {g.id: g.name for g, _ in groups}
        idle = idle_by_region(session, {s.region for s in rows} | ({region} if region else set()))
        return render(
            request,
            session,
            user,
            "servers.html",
            active="servers",
            title="Servers & Quota",
            rows=rows,
            pager=pager,
            filters=filters,
            sort=sort,
            groups=groups,
            group_names=group_names,
            idle=idle,
            sort_to=lambda value: sort_url(request, value),
            enable_editions=protection.ENABLE_EDITIONS,
        )


def _names(session: Session, ids: list[str]) -> dict[str, str]:
    rows = session.execute(select(Server.id, Server.name).where(Server.id.in_(ids)))
    return {str(i): str(n) for i, n in rows}


def _report(session: Session, outcomes: list[protection.Outcome], done: str) -> tuple[str, str]:
    """One flash message for a batch: what succeeded, and each refusal with its reason."""
    names = _names(session, [o.server_id for o in outcomes])
    ok = [names.get(o.server_id, o.server_id) for o in outcomes if o.ok]
    failed = [o for o in outcomes if not o.ok]
    lines = []
    if ok:
        lines.append(f"{done}: {', '.join(ok[:20])}{' …' if len(ok) > 20 else ''}.")
    for o in failed[:20]:
        reason = o.error.message if o.error else "failed"
        lines.append(f"{names.get(o.server_id, o.server_id)}: {reason}")
    if len(failed) > 20:
        lines.append(f"… and {len(failed) - 20} more refused.")
    if failed and ok:
        lines.insert(0, f"{len(ok)} of {len(outcomes)} succeeded.")
    return ("error" if failed else "ok"), "\n".join(lines)


def _check_ids(server_ids: list[str]) -> list[str]:
    ids = list(dict.fromkeys(i for i in server_ids if i))
    if not ids:
        raise Invalid("select at least one server")
    if len(ids) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} servers at a time")
    return ids


@router.post("/servers/enable")
def enable(
    request: Request,
    user: FormOperator,
    server_ids: ServerIds = [],  # noqa: B006 - FastAPI copies defaults per request
    edition: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    ctx = ctx_of(request)
    ids = _check_ids(server_ids)
    with ctx.uow() as session:
        outcomes = protection.batch(
            session, ids, protection.enable_one, edition, ctx.clock.now(), ctx.settings, actor=user.username
        )
        flash = _report(session, outcomes, f"Protection enabled ({edition})")
    return redirect(safe_next(next, PREFIX + "/servers"), flash)


@router.post("/servers/disable")
def disable(
    request: Request,
    user: FormOperator,
    server_ids: ServerIds = [],  # noqa: B006
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    ctx = ctx_of(request)
    ids = _check_ids(server_ids)
    with ctx.uow() as session:
        outcomes = protection.batch(
            session, ids, protection.disable_one, ctx.clock.now(), ctx.settings, actor=user.username
        )
        flash = _report(session, outcomes, "Protection disabled, quota freed")
    return redirect(safe_next(next, PREFIX + "/servers"), flash)


@router.post("/servers/switch-edition")
def switch_edition(
    request: Request,
    user: FormOperator,
    server_ids: ServerIds = [],  # noqa: B006
    edition: Annotated[str, Form(max_length=16)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    ctx = ctx_of(request)
    ids = _check_ids(server_ids)
    with ctx.uow() as session:
        outcomes = protection.batch(
            session,
            ids,
            protection.switch_edition_one,
            edition,
            ctx.clock.now(),
            ctx.settings,
            actor=user.username,
        )
        flash = _report(session, outcomes, f"Edition switched to {edition}")
    return redirect(safe_next(next, PREFIX + "/servers"), flash)
