"""What the one-click fixes of vulnerabilities and baseline checks share: picking the rows a request may
fix (each id on its own), refusing a second fix while one runs or when the agent is not online, and
settling fixes whose command the agent refused, let expire or never answered."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid
from hostward.manager.agentlink.commandstate import command_of, is_pending
from hostward.manager.protection.service import derive_agent_status
from hostward.manager.risk.state import refresh_risk_counts
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.manager.vulns.service import Outcome


class FixRow(Protocol):
    """The fix columns vulnerability findings and baseline check results both have."""

    server_id: str
    fix_status: str | None
    fix_detail: str
    fix_command_id: str | None
    fix_by: str | None
    fix_requested_at: datetime | None


Row = TypeVar("Row", bound=FixRow)


def results_out(outcomes: Iterable[Outcome]) -> list[dict[str, Any]]:
    """Each id's outcome as the handle endpoints answer it: ``id``, ``ok`` and ``error`` (``code`` and
    ``message``, or null)."""
    return [
        {
            "id": o.id,
            "ok": o.ok,
            "error": None if o.error is None else {"code": o.error.code, "message": o.error.message},
        }
        for o in outcomes
    ]


def scans_out(scans: Iterable[Any]) -> list[dict[str, Any]]:
    """The scans a ``verify`` started, as the handle endpoints answer them."""
    return [{"id": s.id, "server_id": s.server_id, "status": s.status} for s in scans]


@dataclass
class FixRequest:
    """What a fix request did: each id's outcome (in the order asked) and the last command queued per
    server (server id -> command id)."""

    outcomes: list[Outcome]
    commands: dict[str, str]


def handle_action(
    session: Session,
    ids: list[str],
    action: str,
    *,
    acknowledge: bool,
    remark: str,
    actor: str,
    now: datetime,
    settings: ManagerSettings,
    fix: Callable[..., FixRequest],
    verify: Callable[..., list[Any]],
    handle: Callable[..., list[Outcome]],
) -> dict[str, Any]:
    """What a risk list's handle endpoint answers: ``fix`` the rows (``results`` and the ``commands`` per
    server), ``verify`` them (the ``scans`` started) or any other action through ``handle`` (``results``)."""
    if action == "fix":
        request = fix(
            session, ids, acknowledge=acknowledge, remark=remark, actor=actor, now=now, settings=settings
        )
        return {"results": results_out(request.outcomes), "commands": request.commands}
    if action == "verify":
        return {"scans": scans_out(verify(session, ids, actor=actor, now=now, settings=settings))}
    return {"results": results_out(handle(session, ids, action, remark=remark, actor=actor, now=now))}


def check_request(acknowledge: bool, warning: str, ids: list[str], field: str, limit: int) -> None:
    """Refuse a fix the operator did not acknowledge (``warning`` says what it does to the servers) or a
    request for no or too many ids."""
    if not acknowledge:
        raise Invalid(f"{warning}: acknowledge it (acknowledge: true)", code="fix_not_acknowledged")
    if not ids or len(ids) > limit:
        raise Invalid(f"{field}: 1 to {limit} ids")


def choose(ids: Iterable[str], load: Callable[[str], Row]) -> tuple[dict[str, Outcome], dict[str, list[Row]]]:
    """Each id's outcome, and the rows ``load`` accepted grouped by server (``load`` raises a
    ``HostwardError`` for an id that cannot be fixed; the others go on)."""
    outcomes: dict[str, Outcome] = {}
    chosen: dict[str, list[Row]] = {}
    for row_id in dict.fromkeys(ids):
        try:
            row = load(row_id)
            chosen.setdefault(row.server_id, []).append(row)
            outcomes[row_id] = Outcome(row_id, True)
        except HostwardError as exc:
            outcomes[row_id] = Outcome(row_id, False, exc)
    return outcomes, chosen


def refuse_if_running(session: Session, row: FixRow, what: str) -> None:
    """A fix whose command is still queued or delivered runs: refuse another one of ``what``."""
    if row.fix_status == "fixing" and is_pending(command_of(session, row.fix_command_id)):
        raise Conflict(f"a fix of this {what} is already running")


def mark_fixing(row: FixRow, command_id: str, actor: str, now: datetime) -> None:
    """``row`` is being fixed by ``command_id`` on behalf of ``actor``."""
    row.fix_status, row.fix_detail, row.fix_command_id = "fixing", "", command_id
    row.fix_by, row.fix_requested_at = actor, now


def require_online(server: Server | None, now: datetime, settings: ManagerSettings) -> Server:
    if server is None:
        raise Conflict("its server is gone")
    status = derive_agent_status(server, now, settings)
    if status != "online":
        raise Conflict(f"server {server.name}: agent is {status}; a fix needs an online agent")
    return server


def unsettled_reason(
    session: Session, row: FixRow, now: datetime, stale: timedelta, stale_reason: str
) -> str:
    """Why a ``fixing`` row has failed ("" while it may still be answered)."""
    command = command_of(session, row.fix_command_id)
    if command is None:
        return "the fix command is gone"
    if command.status == "expired":
        return "the agent did not take the fix command in time (offline?)"
    if command.status == "failed" and not (command.result or {}).get("results"):
        return f"agent: {command.detail or 'failed'}"
    requested = row.fix_requested_at
    if requested is not None:
        requested = requested if requested.tzinfo is not None else requested.replace(tzinfo=UTC)
        if requested < now - stale:
            return stale_reason
    return ""


def refresh_servers(session: Session, server_ids: Iterable[str]) -> None:
    """Recount the risks of the servers whose fixes changed."""
    for server_id in server_ids:
        server = session.get(Server, server_id)
        if server is not None:
            refresh_risk_counts(session, server)
