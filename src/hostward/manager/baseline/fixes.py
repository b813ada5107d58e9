"""One-click fix of failed baseline checks that have a safe fix (``fixable``: file permissions and
ownership, decided by the agent from the check's rules).

The operator acknowledges the change; each server gets one ``baseline_fix`` command and its results are
``fixing``. The agent changes the files, evaluates the checks again and answers with a ``baseline_fix``
record: a check that passes now becomes ``passed`` (fix ``fixed``), otherwise the fix ``failed`` with
the reason. A refused or expired command, or no answer in ``FIX_STALE``, fails the fix. Requests and
outcomes are in the audit record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.audit import service as audit
from hostward.manager.baseline.models import BaselineCheckResult
from hostward.manager.baseline.schemas import BaselineFixRecord
from hostward.manager.baseline.service import MAX_HANDLE, Outcome, get_result
from hostward.manager.protection.service import derive_agent_status
from hostward.manager.risk.state import refresh_risk_counts
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings

FIX_COMMAND = "baseline_fix"
FIX_TOPIC = "baseline_fix"
FIX_STALE = timedelta(hours=1)
FIX_COMMAND_TTL = timedelta(hours=1)
MAX_CHECKS_PER_COMMAND = 100


@dataclass
class FixRequest:
    outcomes: list[Outcome]
    commands: dict[str, str]


def _check(session: Session, row: BaselineCheckResult, now: datetime, settings: ManagerSettings) -> None:
    if row.result != "failed" or row.ignored:
        raise Conflict(f"only failed, not ignored checks can be fixed (this one is {row.result})")
    if not row.fixable:
        raise Conflict(f"{row.check_id}: no safe automatic fix; follow its remediation")
    if row.fix_status == "fixing":
        command = session.get(AgentCommand, row.fix_command_id) if row.fix_command_id else None
        if command is not None and command.status in ("queued", "delivered"):
            raise Conflict("a fix of this check is already running")
    server = session.get(Server, row.server_id)
    if server is None:
        raise Conflict("its server is gone")
    status = derive_agent_status(server, now, settings)
    if status != "online":
        raise Conflict(f"server {server.name}: agent is {status}; a fix needs an online agent")


def request_fix(
    session: Session,
    result_ids: list[str],
    *,
    acknowledge: bool,
    remark: str,
    actor: str,
    now: datetime,
    settings: ManagerSettings,
) -> FixRequest:
    """Queue one ``baseline_fix`` command per server for the fixable failed checks (each on its own)."""
    if not acknowledge:
        raise Invalid(
            "a fix changes file permissions and ownership on the servers: acknowledge it (acknowledge: true)",
            code="fix_not_acknowledged",
        )
    if not result_ids or len(result_ids) > MAX_HANDLE:
        raise Invalid(f"result_ids: 1 to {MAX_HANDLE} ids")
    outcomes: dict[str, Outcome] = {}
    chosen: dict[str, list[BaselineCheckResult]] = {}
    for rid in dict.fromkeys(result_ids):
        try:
            row = get_result(session, rid)
            _check(session, row, now, settings)
            chosen.setdefault(row.server_id, []).append(row)
            outcomes[rid] = Outcome(rid, True)
        except HostwardError as exc:
            outcomes[rid] = Outcome(rid, False, exc)
    commands: dict[str, str] = {}
    for server_id, rows in chosen.items():
        for start in range(0, len(rows), MAX_CHECKS_PER_COMMAND):
            part = rows[start : start + MAX_CHECKS_PER_COMMAND]
            payload = {
                "checks": [
                    {"policy_id": r.policy_id, "check_id": r.check_id, "result_ids": [r.id]} for r in part
                ],
                "actor": actor,
            }
            command = agentlink.queue_command(
                session, server_id, FIX_COMMAND, payload, now, ttl=FIX_COMMAND_TTL
            )
            commands[server_id] = command.id
            for row in part:
                row.fix_status, row.fix_detail, row.fix_command_id = "fixing", "", command.id
                row.fix_by, row.fix_requested_at = actor, now
                audit.record(
                    session,
                    actor,
                    "baseline_fix",
                    target_type="baseline_check",
                    target_id=row.id,
                    target_name=f"{row.policy_id}/{row.check_id}"[:255],
                    remark=remark,
                    server_id=row.server_id,
                    command_id=command.id,
                )
    return FixRequest([outcomes[i] for i in dict.fromkeys(result_ids)], commands)


def _finish(session: Session, row: BaselineCheckResult, status: str, detail: str, command_id: str) -> None:
    row.fix_status = status
    row.fix_detail = detail[:4000]
    audit.record(
        session,
        "system",
        f"baseline_fix_{status}",
        target_type="baseline_check",
        target_id=row.id,
        target_name=f"{row.policy_id}/{row.check_id}"[:255],
        remark=detail[:2000],
        server_id=row.server_id,
        command_id=command_id,
        requested_by=row.fix_by or "",
    )


def ingest_fix(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    """The agent's ``baseline_fix`` record: checks that pass now are passed; others' fix failed."""
    record = BaselineFixRecord.model_validate(data)
    for item in record.results:
        rows = session.scalars(
            select(BaselineCheckResult).where(
                BaselineCheckResult.server_id == server.id,
                BaselineCheckResult.policy_id == item.policy_id,
                BaselineCheckResult.check_id == item.check_id,
            )
        )
        for row in rows:
            if item.result is not None:
                row.result, row.reason = item.result.result, item.result.reason
                row.fixable = item.result.result == "failed" and row.fixable
                row.checked_at = now
            if item.status == "fixed":
                row.handled_by, row.handled_at = row.fix_by or "system", now
            _finish(session, row, item.status, item.detail, record.command_id)
    refresh_risk_counts(session, server)


def settle(session: Session, now: datetime) -> int:
    """Fail ``fixing`` checks whose command was refused or expired, or that got no answer in time."""
    touched: set[str] = set()
    for row in session.scalars(select(BaselineCheckResult).where(BaselineCheckResult.fix_status == "fixing")):
        command = session.get(AgentCommand, row.fix_command_id) if row.fix_command_id else None
        requested = row.fix_requested_at
        if requested is not None and requested.tzinfo is None:
            requested = requested.replace(tzinfo=UTC)
        reason = ""
        if command is None:
            reason = "the fix command is gone"
        elif command.status == "expired":
            reason = "the agent did not take the fix command in time (offline?)"
        elif command.status == "failed" and not (command.result or {}).get("results"):
            reason = f"agent: {command.detail or 'failed'}"
        elif requested is not None and requested < now - FIX_STALE:
            reason = "no result from the agent in time"
        if reason:
            _finish(session, row, "failed", reason, row.fix_command_id or "")
            touched.add(row.server_id)
    for server_id in touched:
        server = session.get(Server, server_id)
        if server is not None:
            refresh_risk_counts(session, server)
    return len(touched)
