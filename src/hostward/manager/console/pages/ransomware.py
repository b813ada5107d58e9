"""Prevention -> Ransomware Prevention: policies, servers (enable/disable with a policy), snapshots and
restore."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from hostward.core.errors import Invalid
from hostward.manager.console.pages.wtp import split_list
from hostward.manager.console.web import (
    PREFIX,
    Filter,
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
from hostward.manager.ransomware import service as rw
from hostward.manager.ransomware.schemas import DEFAULT_TYPES, PolicyIn
from hostward.manager.servers.models import Server

router = APIRouter()

Id = Annotated[str, Form(max_length=64)]
Long = Annotated[str, Form(max_length=20000)]
STATES = {
    "protected": ("Protected", "green"),
    "pending": ("Starting", "blue"),
    "disabled": ("Disabled", "grey"),
    "error": ("Error", "red"),
    "degraded": ("Degraded", "amber"),
}
ACTIONS = {"alarm": "Report alarm", "alarm_and_isolate": "Report alarm and isolate"}


@router.get("/ransomware")
def ransomware_page(request: Request, user: User, server_id: Filter = None) -> Response:
    ctx = ctx_of(request)
    pager = Pager.of(request)
    with ctx.uow() as session:
        servers, servers_total = rw.list_servers(session, limit=200)
        snapshots, pager.total = rw.list_snapshots(
            session, server_id=opt(server_id), offset=pager.offset, limit=pager.size
        )
        return render(
            request,
            session,
            user,
            "ransomware.html",
            active="ransomware",
            title="Ransomware Prevention",
            policies=rw.list_policies(session),
            servers=servers,
            servers_total=servers_total,
            snapshots=snapshots,
            pager=pager,
            filter_server=session.get(Server, opt(server_id)) if opt(server_id) else None,
            states=STATES,
            actions=ACTIONS,
            default_types="; ".join(DEFAULT_TYPES),
        )


def _back(next_url: str) -> str:
    return safe_next(next_url, PREFIX + "/ransomware")


def _policy(
    name: str,
    protected_dirs: str,
    excluded_dirs: str,
    file_types: str,
    action: str,
    bait: str,
    interval: int,
    keep: int,
) -> PolicyIn:
    data = {
        "name": name,
        "protected_dirs": split_list(protected_dirs),
        "excluded_dirs": split_list(excluded_dirs),
        "file_types": split_list(file_types.replace(",", ";")) or list(DEFAULT_TYPES),
        "action": action,
        "bait": bool(bait),
        "snapshot_interval_h": interval,
        "snapshot_keep": keep,
    }
    try:
        return PolicyIn.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise Invalid(f"{loc}: {msg}" if loc else msg) from exc


@router.post("/ransomware/policies")
def create_policy(
    request: Request,
    user: FormOperator,
    name: Annotated[str, Form(max_length=64)],
    protected_dirs: Long,
    excluded_dirs: Long = "",
    file_types: Long = "",
    action: Annotated[str, Form(max_length=32)] = "alarm",
    bait: Annotated[str, Form(max_length=8)] = "",
    snapshot_interval_h: Annotated[int, Form(ge=1, le=720)] = 24,
    snapshot_keep: Annotated[int, Form(ge=1, le=100)] = 7,
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    body = _policy(
        name, protected_dirs, excluded_dirs, file_types, action, bait, snapshot_interval_h, snapshot_keep
    )
    with ctx.uow() as session:
        rw.create_policy(session, body, actor=user.username, now=ctx.clock.now())
    return redirect(_back(next), ("ok", f"Ransomware policy {body.name} created."))


@router.post("/ransomware/policies/delete")
def delete_policy(request: Request, user: FormOperator, policy_id: Id, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        name = rw.get_policy(session, policy_id).name
        rw.delete_policy(session, policy_id, actor=user.username, now=ctx.clock.now())
    return redirect(_back(next), ("ok", f"Ransomware policy {name} deleted."))


@router.post("/ransomware/enable")
def enable(request: Request, user: FormOperator, server_id: Id, policy_id: Id, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        rw.get_policy(session, policy_id)
        outcome = rw.batch(
            session, [server_id], rw.enable_one, policy_id, ctx.clock.now(), actor=user.username
        )[0]
    if not outcome.ok and outcome.error is not None:
        return redirect(_back(next), ("error", outcome.error.message))
    return redirect(_back(next), ("ok", "Ransomware prevention enabled."))


@router.post("/ransomware/disable")
def disable(request: Request, user: FormOperator, server_id: Id, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        outcome = rw.batch(session, [server_id], rw.disable_one, ctx.clock.now(), actor=user.username)[0]
    if not outcome.ok and outcome.error is not None:
        return redirect(_back(next), ("error", outcome.error.message))
    return redirect(_back(next), ("ok", "Ransomware prevention disabled."))


@router.post("/ransomware/restore")
def restore(
    request: Request, user: FormOperator, server_id: Id, snapshot_id: Id, next: Next = ""
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        command_id = rw.restore(session, server_id, snapshot_id, actor=user.username, now=ctx.clock.now())
    return redirect(
        _back(next), ("ok", f"Restore from snapshot {snapshot_id} queued (command {command_id}).")
    )
