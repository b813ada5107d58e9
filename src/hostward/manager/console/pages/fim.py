"""Prevention -> File Integrity Monitoring: per-server change counts, change records, accept changes."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from hostward.core.errors import Invalid
from hostward.manager.console.web import (
    PREFIX,
    Filter,
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
from hostward.manager.fim import service as fim
from hostward.manager.fim.models import ACTIONS, CHANGE_TYPES, CLASSIFICATIONS
from hostward.manager.fim.schemas import describe
from hostward.manager.servers.models import Server

router = APIRouter()

HOSTS_SHOWN = 50
MAX_ACCEPT_IDS = 500

# value -> (label, badge colour)
CLASSIFICATION_BADGES = {
    "alarmed": ("Alarmed", "red"),
    "package_update": ("Package update", "blue"),
    "accepted": ("Accepted", "green"),
    "baseline": ("New baseline", "grey"),
}
ACTION_LABELS = {
    "create": "Create",
    "modify": "Modify",
    "delete": "Delete",
    "attributes": "Attributes",
    "move": "Move",
    "accept": "Baseline accepted",
}
TYPE_LABELS = {"file": "File", "dir": "Directory"}


@router.get("/fim")
def fim_page(
    request: Request,
    user: User,
    server_id: Filter = None,
    action: Filter = None,
    classification: Filter = None,
    change_type: Filter = None,
    q: Filter = None,
    hq: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    filters = {
        "server_id": opt(server_id),
        "action": opt(action) if opt(action) in ACTIONS else None,
        "classification": opt(classification) if opt(classification) in CLASSIFICATIONS else None,
        "change_type": opt(change_type) if opt(change_type) in CHANGE_TYPES else None,
        "q": opt(q),
    }
    with ctx.uow() as session:
        hosts, hosts_total = fim.list_hosts(session, region=region, q=opt(hq), limit=HOSTS_SHOWN)
        rows, pager.total = fim.list_changes(
            session,
            region=region,
            server_id=filters["server_id"],
            action=filters["action"],
            classification=filters["classification"],
            change_type=filters["change_type"],
            q=filters["q"],
            offset=pager.offset,
            limit=pager.size,
        )
        server = session.get(Server, filters["server_id"]) if filters["server_id"] else None
        return render(
            request,
            session,
            user,
            "fim.html",
            active="fim",
            title="File Integrity Monitoring",
            stats=fim.statistics(session, region=region),
            hosts=hosts,
            hosts_total=hosts_total,
            hosts_query=opt(hq) or "",
            rows=[(c, name, describe(c, hashes=False)) for c, name in rows],
            pager=pager,
            filters=filters,
            filter_server=server,
            classifications=CLASSIFICATION_BADGES,
            actions=ACTION_LABELS,
            types=TYPE_LABELS,
        )


@router.get("/fim/changes/{change_id}")
def change_page(request: Request, change_id: str, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        change = fim.get_change(session, change_id)
        server = session.get(Server, change.server_id)
        return render(
            request,
            session,
            user,
            "fim_change.html",
            active="fim",
            title=change.path,
            change=change,
            server=server,
            description=describe(change),
            old_json=json.dumps(change.old, indent=2, ensure_ascii=False, default=str),
            new_json=json.dumps(change.new, indent=2, ensure_ascii=False, default=str),
            classifications=CLASSIFICATION_BADGES,
            actions=ACTION_LABELS,
            types=TYPE_LABELS,
        )


@router.post("/fim/accept")
def accept(
    request: Request,
    user: FormOperator,
    change_ids: Annotated[list[str], Form(max_length=MAX_ACCEPT_IDS)] = [],  # noqa: B006
    remark: Annotated[str, Form(max_length=2000)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = list(dict.fromkeys(i for i in change_ids if i))
    if not ids:
        raise Invalid("select at least one change")
    with ctx.uow() as session:
        results = fim.accept_changes(session, ids, actor=user.username, now=ctx.clock.now(), remark=remark)
    paths = sum(len(r.paths) for r in results)
    servers = len({r.server.id for r in results})
    records = sum(r.records_accepted for r in results)
    handled = sum(r.alarms_handled for r in results)
    text = (
        f"Accepted as the new baseline: {paths} path{'s' if paths != 1 else ''} on {servers} "
        f"server{'s' if servers != 1 else ''} ({records} record{'s' if records != 1 else ''}, {handled} "
        f"alarm{'s' if handled != 1 else ''} handled). The agent confirms with a “New baseline” record."
    )
    return redirect(safe_next(next, PREFIX + "/fim"), ("ok", text))
