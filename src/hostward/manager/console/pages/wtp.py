"""Prevention -> Web Tamper Protection: servers (status, tamper counts), enable/disable, one server's
directories with exclusions, privileged processes, schedule and backup, and the tamper events."""

from __future__ import annotations

import posixpath
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select

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
from hostward.manager.quotas.models import Quota
from hostward.manager.servers.models import Server
from hostward.manager.wtp import service as wtp
from hostward.manager.wtp.remote import RemoteBackup
from hostward.manager.wtp.schemas import WtpConfigIn

router = APIRouter()

Short = Annotated[str, Form(max_length=256)]
Long = Annotated[str, Form(max_length=20000)]
SERVERS_SHOWN = 200

# agent-reported state -> (label, badge colour)
STATES = {
    "protected": ("Protected", "green"),
    "unprotected_window": ("Scheduled window", "blue"),
    "pending": ("Starting", "blue"),
    "disabled": ("Disabled", "grey"),
    "error": ("Error", "red"),
    "partial": ("Partial", "amber"),
}
OUTCOMES = {"restored": "Restored", "removed": "Removed", "relocked": "Re-locked"}
WEEKDAYS = ((1, "Mon"), (2, "Tue"), (3, "Wed"), (4, "Thu"), (5, "Fri"), (6, "Sat"), (7, "Sun"))


def split_list(value: str) -> list[str]:
    """``a; b`` or one per line, as the reference's forms take them."""
    return [p.strip() for p in value.replace("\n", ";").split(";") if p.strip()]


def validated(data: dict[str, Any]) -> WtpConfigIn:
    """A form's configuration, or a clear error naming the field (shown on the page it came from)."""
    try:
        return WtpConfigIn.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(p) for p in err.get("loc", ()))
            msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
        raise Invalid("; ".join(parts)) from exc


@router.get("/wtp")
def wtp_page(request: Request, user: User, server_id: Filter = None, q: Filter = None) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    with ctx.uow() as session:
        rows, total = wtp.list_servers(session, region=region, limit=SERVERS_SHOWN)
        events, pager.total = wtp.list_events(
            session, server_id=opt(server_id), q=opt(q), offset=pager.offset, limit=pager.size
        )
        # Servers WTP can be enabled on: agent online, no edition yet, and an idle wtp quota in their region.
        idle_regions = set(
            session.scalars(select(Quota.region).where(Quota.edition == "wtp", Quota.server_id.is_(None)))
        )
        candidates_stmt = select(Server).where(Server.edition.is_(None), Server.agent_status == "online")
        if region:
            candidates_stmt = candidates_stmt.where(Server.region == region)
        candidates = list(session.scalars(candidates_stmt.order_by(Server.name).limit(500)))
        filter_server = session.get(Server, opt(server_id)) if opt(server_id) else None
        return render(
            request,
            session,
            user,
            "wtp.html",
            active="wtp",
            title="Web Tamper Protection",
            stats=wtp.statistics(session, ctx.clock.now()),
            rows=rows,
            total=total,
            events=events,
            pager=pager,
            filters={"server_id": opt(server_id), "q": opt(q)},
            filter_server=filter_server,
            candidates=candidates,
            idle_regions=idle_regions,
            states=STATES,
            outcomes=OUTCOMES,
        )


@router.get("/wtp/servers/{server_id}")
def wtp_server_page(request: Request, server_id: str, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        row = wtp.server_row(session, server_id)
        _server, config, _active = wtp.config_of(session, server_id)
        events, _n = wtp.list_events(session, server_id=server_id, limit=20)
        manifest = RemoteBackup(ctx.settings.data_dir, server_id).manifest() if config.remote_backup else []
        return render(
            request,
            session,
            user,
            "wtp_server.html",
            active="wtp",
            title=f"WTP · {row.server.name}",
            row=row,
            server=row.server,
            config=config,
            events=events,
            remote_files=len(manifest),
            states=STATES,
            outcomes=OUTCOMES,
            weekdays=WEEKDAYS,
        )


def _back(server_id: str) -> str:
    return f"{PREFIX}/wtp/servers/{server_id}"


@router.post("/wtp/enable")
def enable(
    request: Request,
    user: FormOperator,
    server_ids: Annotated[list[str], Form(max_length=200)] = [],  # noqa: B006
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    ids = [i for i in server_ids if i]
    if not ids:
        raise Invalid("select a server")
    with ctx.uow() as session:
        outcomes = wtp.batch(session, ids, wtp.enable_one, ctx.clock.now(), ctx.settings, actor=user.username)
    return _outcome_redirect(outcomes, next, "Web tamper protection enabled")


@router.post("/wtp/disable")
def disable(
    request: Request, user: FormOperator, server_id: Annotated[str, Form(max_length=64)], next: Next = ""
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        outcomes = wtp.batch(
            session, [server_id], wtp.disable_one, ctx.clock.now(), ctx.settings, actor=user.username
        )
    return _outcome_redirect(outcomes, next, "Web tamper protection disabled (configuration kept)")


def _outcome_redirect(outcomes: list[wtp.Outcome], next_url: str, done: str) -> Response:
    failed = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed)
    if failed:
        reasons = "; ".join(o.error.message for o in failed[:3] if o.error is not None)
        text = (f"{done} on {ok} server(s). " if ok else "") + f"Refused: {reasons}"
        return redirect(safe_next(next_url, PREFIX + "/wtp"), ("error", text))
    return redirect(
        safe_next(next_url, PREFIX + "/wtp"), ("ok", f"{done} on {ok} server{'s' if ok != 1 else ''}.")
    )


def _save(request: Request, user: FormOperator, server_id: str, data: dict[str, Any], text: str) -> Response:
    ctx = ctx_of(request)
    config = validated(data)
    with ctx.uow() as session:
        wtp.set_config(session, server_id, config, actor=user.username, now=ctx.clock.now())
    return redirect(_back(server_id), ("ok", text))


def _current(request: Request, server_id: str) -> dict[str, Any]:
    with ctx_of(request).uow() as session:
        _server, config, _active = wtp.config_of(session, server_id)
        return config.model_dump()


@router.post("/wtp/servers/{server_id}/directories/add")
def add_directory(
    request: Request,
    server_id: str,
    user: FormOperator,
    path: Short,
    excluded_subdirs: Long = "",
    excluded_types: Long = "",
    excluded_paths: Long = "",
) -> Response:
    data = _current(request, server_id)
    clean = path.strip()
    entry: dict[str, Any] = {
        "path": posixpath.normpath(clean) if clean.startswith("/") else clean,
        "excluded_subdirs": split_list(excluded_subdirs),
        "excluded_types": split_list(excluded_types),
        "excluded_paths": split_list(excluded_paths),
        "suspended": False,
    }
    existing = [i for i, d in enumerate(data["dirs"]) if d["path"] == entry["path"]]
    if existing:  # editing a directory's exclusions keeps its place and its suspended flag
        entry["suspended"] = data["dirs"][existing[0]]["suspended"]
        data["dirs"][existing[0]] = entry
    else:
        data["dirs"].append(entry)
    return _save(request, user, server_id, data, f"Protected directory {entry['path']} saved.")


@router.post("/wtp/servers/{server_id}/directories/remove")
def remove_directory(request: Request, server_id: str, user: FormOperator, path: Short) -> Response:
    data = _current(request, server_id)
    kept = [d for d in data["dirs"] if d["path"] != path]
    if len(kept) == len(data["dirs"]):
        raise Invalid(f"path: {path} is not a protected directory")
    data["dirs"] = kept
    return _save(
        request, user, server_id, data, f"{path} is no longer protected (files keep their backup copy)."
    )


@router.post("/wtp/servers/{server_id}/directories/{action}")
def suspend_resume(
    request: Request, server_id: str, action: str, user: FormOperator, path: Short
) -> Response:
    if action not in ("suspend", "resume"):
        raise Invalid("action must be suspend or resume")
    ctx = ctx_of(request)
    with ctx.uow() as session:
        wtp.set_suspended(
            session, server_id, path, action == "suspend", actor=user.username, now=ctx.clock.now()
        )
    return redirect(
        _back(server_id), ("ok", f"{path} {'suspended' if action == 'suspend' else 'protected again'}.")
    )


@router.post("/wtp/servers/{server_id}/settings")
def save_settings(
    request: Request,
    server_id: str,
    user: FormOperator,
    backup_path: Short,
    privileged: Long = "",
    privileged_children: Annotated[str, Form(max_length=8)] = "",
    remote_backup: Annotated[str, Form(max_length=8)] = "",
    schedule_enabled: Annotated[str, Form(max_length=8)] = "",
    weekdays: Annotated[list[str], Form(max_length=7)] = [],  # noqa: B006
    windows: Long = "",
) -> Response:
    data = _current(request, server_id)
    parsed = []
    for item in split_list(windows.replace(",", ";")):
        start, sep, end = item.partition("-")
        if not sep:
            raise Invalid(f"schedule.windows: {item!r}: expected HH:MM-HH:MM")
        parsed.append({"start": start.strip(), "end": end.strip()})
    try:
        days = sorted({int(d) for d in weekdays})
    except ValueError as exc:
        raise Invalid("schedule.weekdays: expected numbers 1..7") from exc
    data.update(
        backup_path=backup_path.strip(),
        privileged=split_list(privileged),
        privileged_children=bool(privileged_children),
        remote_backup=bool(remote_backup),
        schedule={"enabled": bool(schedule_enabled), "weekdays": days, "windows": parsed},
    )
    return _save(request, user, server_id, data, "WTP settings saved.")


@router.post("/wtp/servers/{server_id}/restore-remote")
def restore_remote(request: Request, server_id: str, user: FormOperator, path: Short) -> Response:
    ctx = ctx_of(request)
    path = path.strip()
    if not path.startswith("/"):
        raise Invalid("path: must be an absolute path")
    with ctx.uow() as session:
        server = wtp.get_server(session, server_id)
        known = RemoteBackup(ctx.settings.data_dir, server.id).has_path(path)
        command_id = wtp.queue_remote_restore(
            session, server.id, path, known, actor=user.username, now=ctx.clock.now()
        )
    return redirect(
        _back(server_id), ("ok", f"Restore of {path} from the manager's copy queued (command {command_id}).")
    )
