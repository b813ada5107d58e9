"""One-click fix of failed baseline checks that have a safe fix (``fixable``: file permissions and
ownership, decided by the agent from the check's rules).

The operator acknowledges the change; each server gets one ``baseline_fix`` command and its results are
``fixing``. The agent changes the files, evaluates the checks again and answers with a ``baseline_fix``
record: a check that passes now becomes ``passed`` (fix ``fixed``), otherwise the fix ``failed`` with
the reason. A refused or expired command, or no answer in ``FIX_STALE``, fails the fix. Requests and
outcomes are in the audit record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict
from hostward.manager.agentlink import service as agentlink
from hostward.manager.audit import service as audit
from hostward.manager.baseline.models import BaselineCheckResult
from hostward.manager.baseline.schemas import BaselineFixRecord
from hostward.manager.baseline.service import MAX_HANDLE, get_result
from hostward.manager.risk.fixes import (
    FixRequest,
    check_request,
    choose,
    mark_fixing,
    refresh_servers,
    refuse_if_running,
    require_online,
    unsettled_reason,
)
from hostward.manager.risk.state import refresh_risk_counts
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings

FIX_COMMAND = "baseline_fix"
FIX_TOPIC = "baseline_fix"
FIX_STALE = timedelta(hours=1)
FIX_COMMAND_TTL = timedelta(hours=1)
MAX_CHECKS_PER_COMMAND = 100


def _check(session: Session, row: BaselineCheckResult, now: datetime, settings: ManagerSettings) -> None:
    if row.result != "failed" or row.ignored:
        raise Conflict(f"only failed, not ignored checks can be fixed (this one is {row.result})")
    if not row.fixable:
        raise Conflict(f"{row.check_id}: no safe automatic fix; follow its remediation")
    refuse_if_running(session, row, "check")
    require_online(session.get(Server, row.server_id), now, settings)


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
    check_request(
        acknowledge,
        "a fix changes file permissions and ownership on the servers",
        result_ids,
        "result_ids",
        MAX_HANDLE,
    )

    def load(rid: str) -> BaselineCheckResult:
        row = get_result(session, rid)
        _check(session, row, now, settings)
        return row

    outcomes, chosen = choose(result_ids, load)
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
                mark_fixing(row, command.id, actor, now)
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
        reason = unsettled_reason(session, row, now, FIX_STALE, "no result from the agent in time")
        if reason:
            _finish(session, row, "failed", reason, row.fix_command_id or "")
            touched.add(row.server_id)
    refresh_servers(session, touched)
    return len(touched)
