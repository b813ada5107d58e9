"""Baseline checks on the manager: results per server and check (ignore / unignore / verify, pass rate),
weak-password accounts and the password complexity policy, from the agents' records.

Pass rate = passed / (passed + failed), ignored failures left out of both (the operator accepted them);
not-applicable checks do not count. A run arrives in parts (``baseline_results`` records); the last part
closes it: when all its results arrived, checks it no longer reports (policy changed) are dropped.
A weak-password account disappears when a complete check no longer finds it, and its ``login_1003``
alarm is then marked handled by the system.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.baseline.models import CHECK_RESULTS, BaselineCheckResult, WeakPassword
from hostward.manager.baseline.schemas import BaselineRecord, ComplexityRecord, WeakpassRecord
from hostward.manager.risk.models import RiskServerState
from hostward.manager.risk.state import refresh_risk_counts, state_for
from hostward.manager.scans.models import Scan
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.manager.vulns.service import Outcome

BASELINE_TOPIC = "baseline_results"
COMPLEXITY_TOPIC = "password_complexity"
WEAKPASS_TOPIC = "weak_passwords"
WEAK_PASSWORD_CLASS = "login_1003"
SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
MAX_HANDLE = 500


def pass_rate(passed: int, failed: int) -> float | None:
    judged = passed + failed
    return None if judged == 0 else round(100.0 * passed / judged, 1)


# ---- ingest -------------------------------------------------------------------------------------------


def ingest_results(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    record = BaselineRecord.model_validate(data)
    if record.part >= record.parts:
        raise ValueError(f"part {record.part} of {record.parts}")
    keys = {(r.policy_id, r.check_id): r for r in record.results}
    existing: dict[tuple[str, str], BaselineCheckResult] = {}
    if keys:
        rows = session.scalars(
            select(BaselineCheckResult).where(
                BaselineCheckResult.server_id == server.id,
                BaselineCheckResult.check_id.in_({c for _, c in keys}),
            )
        )
        existing = {(r.policy_id, r.check_id): r for r in rows}
    for key, r in keys.items():
        row = existing.get(key)
        if row is None:
            row = BaselineCheckResult(
                server_id=server.id, policy_id=r.policy_id, check_id=r.check_id, first_seen=now
            )
            session.add(row)
        if r.result != "failed" and row.ignored:
            # A check that passes again needs no exception any more.
            row.ignored, row.handled_by, row.handled_at = False, "system", now
        row.policy_name = r.policy_name or row.policy_name or r.policy_id
        row.title, row.severity, row.result, row.reason = r.title, r.severity, r.result, r.reason
        row.rationale, row.remediation, row.description = r.rationale, r.remediation, r.description
        row.fixable = r.fixable
        row.checked_at = now
        row.last_scan_id = record.scan_id
    session.flush()
    if record.part != record.parts - 1:
        return
    seen = (
        session.scalar(
            select(func.count()).where(
                BaselineCheckResult.server_id == server.id, BaselineCheckResult.last_scan_id == record.scan_id
            )
        )
        or 0
    )
    if seen == record.total:
        session.execute(
            delete(BaselineCheckResult).where(
                BaselineCheckResult.server_id == server.id, BaselineCheckResult.last_scan_id != record.scan_id
            )
        )
    session.execute(
        update(BaselineCheckResult)
        .where(BaselineCheckResult.server_id == server.id, BaselineCheckResult.verify_scan_id.is_not(None))
        .values(verify_scan_id=None)
        .execution_options(synchronize_session=False)
    )
    state = state_for(session, server.id)
    state.baseline_scanned_at = now
    state.baseline_scan_id = record.scan_id
    state.baseline_seconds = record.seconds
    state.baseline_errors = record.errors[:100]
    state.baseline_enabled = record.enabled
    refresh_risk_counts(session, server)


def ingest_complexity(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    record = ComplexityRecord.model_validate(data)
    state = state_for(session, server.id)
    if record.passed:
        state.complexity_ignored = False
    state.complexity_checked_at = now
    state.complexity_module = record.module or ""
    state.complexity_source = record.source
    state.complexity_passed = record.passed
    state.complexity_items = [i.model_dump() for i in record.items]
    refresh_risk_counts(session, server)


def ingest_weak_passwords(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    record = WeakpassRecord.model_validate(data)
    state = state_for(session, server.id)
    state.weakpass_checked_at = now
    state.weakpass_status = record.status
    state.weakpass_detail = record.detail
    state.weakpass_complete = record.complete
    state.weakpass_accounts = record.accounts_checked
    state.weakpass_hashes = record.hashes
    state.weakpass_seconds = record.seconds
    if record.status == "ok":
        rows = {
            w.username: w
            for w in session.scalars(select(WeakPassword).where(WeakPassword.server_id == server.id))
        }
        reported = {w.username: w for w in record.weak}
        for name, w in reported.items():
            row = rows.get(name)
            if row is None:
                row = WeakPassword(server_id=server.id, username=name, first_seen=now)
                session.add(row)
            row.account_type, row.reasons, row.last_seen = w.account_type, list(w.reasons), now
        if record.complete:
            gone = [name for name in rows if name not in reported]
            for name in gone:
                session.delete(rows[name])
            if gone:
                _close_weak_alarms(session, server.id, gone, now)
    refresh_risk_counts(session, server)


def _close_weak_alarms(session: Session, server_id: str, usernames: list[str], now: datetime) -> None:
    fingerprints = [f"{WEAK_PASSWORD_CLASS}:{name}" for name in usernames]
    session.execute(
        update(Alarm)
        .where(
            Alarm.server_id == server_id,
            Alarm.event_class == WEAK_PASSWORD_CLASS,
            Alarm.status == "unhandled",
            Alarm.fingerprint.in_(fingerprints),
        )
        .values(
            status="handled",
            handle_action="mark_as_handled",
            handler="system",
            handled_at=now,
            handle_remark="the password is no longer weak (weak-password check)",
        )
        .execution_options(synchronize_session=False)
    )


# ---- handling -----------------------------------------------------------------------------------------


def get_result(session: Session, result_id: str) -> BaselineCheckResult:
    row = session.get(BaselineCheckResult, result_id)
    if row is None:
        raise NotFound(f"baseline result {result_id} not found")
    return row


def handle(
    session: Session, result_ids: list[str], action: str, *, remark: str, actor: str, now: datetime
) -> list[Outcome]:
    """``ignore`` a failed check on a server (accepted risk) or ``unignore`` it."""
    if action not in ("ignore", "unignore"):
        raise Invalid("action must be ignore or unignore")
    if not result_ids or len(result_ids) > MAX_HANDLE:
        raise Invalid(f"result_ids: 1 to {MAX_HANDLE} ids")
    outcomes: list[Outcome] = []
    touched: set[str] = set()
    for result_id in dict.fromkeys(result_ids):
        try:
            with session.begin_nested():
                row = get_result(session, result_id)
                if action == "ignore":
                    if row.result != "failed" or row.ignored:
                        raise Conflict("only failed checks that are not ignored can be ignored")
                    row.ignored = True
                else:
                    if not row.ignored:
                        raise Conflict("this check is not ignored")
                    row.ignored = False
                row.handled_by, row.handled_at, row.remark = actor, now, remark[:2000]
                audit.record(
                    session,
                    actor,
                    f"baseline_{action}",
                    target_type="baseline_check",
                    target_id=row.id,
                    target_name=f"{row.policy_id}/{row.check_id}"[:255],
                    remark=remark,
                    server_id=row.server_id,
                )
                touched.add(row.server_id)
            outcomes.append(Outcome(result_id, True))
        except HostwardError as exc:
            outcomes.append(Outcome(result_id, False, exc))
    for server_id in sorted(touched):
        server = session.get(Server, server_id)
        if server is not None:
            refresh_risk_counts(session, server)
    return outcomes


def verify(
    session: Session,
    result_ids: list[str],
    *,
    actor: str,
    now: datetime,
    settings: ManagerSettings,
) -> list[Scan]:
    """Re-run the baseline of the servers of ``result_ids`` (one manual ``baseline`` scan each)."""
    from hostward.manager.scans import service as scans

    if not result_ids or len(result_ids) > MAX_HANDLE:
        raise Invalid(f"result_ids: 1 to {MAX_HANDLE} ids")
    rows = [get_result(session, rid) for rid in dict.fromkeys(result_ids)]
    by_server: dict[str, list[BaselineCheckResult]] = {}
    for row in rows:
        by_server.setdefault(row.server_id, []).append(row)
    created = scans.create_scans(session, list(by_server), "baseline", "manual", now, settings, actor)
    for scan in created:
        for row in by_server.get(scan.server_id, []):
            row.verify_scan_id = scan.id
    return created


def handle_complexity(
    session: Session, server_ids: list[str], action: str, *, actor: str, now: datetime
) -> int:
    """Ignore (accept) or unignore a server's failed password complexity policy; returns how many."""
    if action not in ("ignore", "unignore"):
        raise Invalid("action must be ignore or unignore")
    changed = 0
    for server_id in dict.fromkeys(server_ids):
        server = session.get(Server, server_id)
        if server is None:
            raise NotFound(f"server {server_id} not found")
        state = state_for(session, server_id)
        want = action == "ignore"
        if want and state.complexity_passed is not False:
            raise Conflict(f"server {server.name}: the password complexity policy has not failed")
        if state.complexity_ignored != want:
            state.complexity_ignored = want
            changed += 1
            audit.record(
                session,
                actor,
                f"complexity_{action}",
                target_type="server",
                target_id=server.id,
                target_name=server.name,
            )
        refresh_risk_counts(session, server)
    return changed


# ---- views --------------------------------------------------------------------------------------------


def _count_if(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


def list_checks(
    session: Session,
    *,
    region: str | None = None,
    server_id: str | None = None,
    severity: str | None = None,
    q: str | None = None,
    only_failed: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """One row per check across servers: failed / ignored / passed / not applicable counts."""
    r = BaselineCheckResult
    failed_open = (r.result == "failed") & r.ignored.is_(False)
    stmt = (
        select(
            r.policy_id,
            func.max(r.policy_name).label("policy_name"),
            r.check_id,
            func.max(r.title).label("title"),
            func.min(case(SEVERITY_RANK, value=r.severity, else_=4)).label("rank"),
            _count_if(failed_open).label("failed"),
            _count_if((r.result == "failed") & r.ignored.is_(True)).label("ignored"),
            _count_if(r.result == "passed").label("passed"),
            _count_if(r.result == "not_applicable").label("not_applicable"),
            func.count(func.distinct(r.server_id)).label("servers"),
            func.max(r.checked_at).label("last_checked"),
        )
        .join(Server, Server.id == r.server_id)
        .group_by(r.policy_id, r.check_id)
    )
    if region:
        stmt = stmt.where(Server.region == region)
    if server_id:
        stmt = stmt.where(r.server_id == server_id)
    if severity:
        stmt = stmt.where(r.severity == severity)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(r.check_id.ilike(like), r.title.ilike(like), r.policy_id.ilike(like)))
    if only_failed:
        stmt = stmt.having(_count_if(failed_open) > 0)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(
            _count_if(failed_open).desc(),
            func.min(case(SEVERITY_RANK, value=r.severity, else_=4)),
            r.policy_id,
            r.check_id,
        )
        .offset(offset)
        .limit(limit)
    ).all()
    severities = list(SEVERITY_RANK)
    return [
        {
            "policy_id": row.policy_id,
            "policy_name": row.policy_name or row.policy_id,
            "check_id": row.check_id,
            "title": row.title or row.check_id,
            "severity": severities[min(int(row.rank), 3)],
            "failed": int(row.failed or 0),
            "ignored": int(row.ignored or 0),
            "passed": int(row.passed or 0),
            "not_applicable": int(row.not_applicable or 0),
            "servers": int(row.servers or 0),
            "last_checked": row.last_checked,
        }
        for row in rows
    ], total


def list_results(
    session: Session,
    *,
    server_id: str | None = None,
    policy_id: str | None = None,
    check_id: str | None = None,
    result: str | None = None,
    region: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[BaselineCheckResult, str, bool]], int]:
    """Results with server name and whether a verification scan is running for them."""
    r = BaselineCheckResult
    verifying = (
        select(Scan.id)
        .where(Scan.id == r.verify_scan_id, Scan.status.in_(("queued", "running")))
        .exists()
        .label("verifying")
    )
    stmt = select(r, Server.name, verifying).join(Server, Server.id == r.server_id)
    if server_id:
        stmt = stmt.where(r.server_id == server_id)
    if policy_id:
        stmt = stmt.where(r.policy_id == policy_id)
    if check_id:
        stmt = stmt.where(r.check_id == check_id)
    if result:
        if result not in (*CHECK_RESULTS, "ignored"):
            raise Invalid(f"result must be one of {', '.join(CHECK_RESULTS)} or ignored")
        if result == "ignored":
            stmt = stmt.where(r.result == "failed", r.ignored.is_(True))
        elif result == "failed":
            stmt = stmt.where(r.result == "failed", r.ignored.is_(False))
        else:
            stmt = stmt.where(r.result == result)
    if region:
        stmt = stmt.where(Server.region == region)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    order = case({"failed": 0, "not_applicable": 2, "passed": 3}, value=r.result, else_=4)
    rows = session.execute(
        stmt.order_by(
            order, r.ignored, case(SEVERITY_RANK, value=r.severity, else_=4), Server.name, r.check_id
        )
        .offset(offset)
        .limit(limit)
    ).all()
    return [(row, name, bool(v)) for row, name, v in rows], total


def list_weak_passwords(
    session: Session,
    *,
    server_id: str | None = None,
    region: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[WeakPassword, str]], int]:
    stmt = select(WeakPassword, Server.name).join(Server, Server.id == WeakPassword.server_id)
    if server_id:
        stmt = stmt.where(WeakPassword.server_id == server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(Server.name, WeakPassword.username).offset(offset).limit(limit)
    ).all()
    return [(row, name) for row, name in rows], total


def list_states(
    session: Session, *, server_id: str | None = None, region: str | None = None, limit: int = 200
) -> list[tuple[RiskServerState, Server]]:
    """Servers' risk states (weak-password status, complexity), by server name."""
    stmt = select(RiskServerState, Server).join(Server, Server.id == RiskServerState.server_id)
    if server_id:
        stmt = stmt.where(RiskServerState.server_id == server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    return [(state, server) for state, server in session.execute(stmt.order_by(Server.name).limit(limit))]


def statistics(session: Session, region: str | None = None) -> dict[str, Any]:
    r = BaselineCheckResult
    base = select(r).join(Server, Server.id == r.server_id)
    if region:
        base = base.where(Server.region == region)
    sub = base.subquery()
    failed_open = (sub.c.result == "failed") & sub.c.ignored.is_(False)
    row = session.execute(
        select(
            func.count(func.distinct(sub.c.server_id)),
            func.count(func.distinct(sub.c.policy_id + "/" + sub.c.check_id)),
            _count_if(failed_open),
            _count_if((sub.c.result == "failed") & sub.c.ignored.is_(True)),
            _count_if(sub.c.result == "passed"),
            _count_if(sub.c.result == "not_applicable"),
            func.count(func.distinct(case((failed_open, sub.c.server_id), else_=None))),
        )
    ).one()
    servers, checks, failed, ignored, passed, na, servers_failed = (int(v or 0) for v in row)
    top = session.execute(
        select(Server.id, Server.name, func.count().label("n"))
        .join(sub, sub.c.server_id == Server.id)
        .where(failed_open)
        .group_by(Server.id, Server.name)
        .order_by(func.count().desc(), Server.name)
        .limit(5)
    ).all()
    weak_base = select(WeakPassword).join(Server, Server.id == WeakPassword.server_id)
    if region:
        weak_base = weak_base.where(Server.region == region)
    weak_sub = weak_base.subquery()
    complexity = (
        select(func.count())
        .select_from(RiskServerState)
        .join(Server, Server.id == RiskServerState.server_id)
        .where(RiskServerState.complexity_passed.is_(False), RiskServerState.complexity_ignored.is_(False))
    )
    if region:
        complexity = complexity.where(Server.region == region)
    return {
        "servers_scanned": servers,
        "checks": checks,
        "failed": failed,
        "ignored": ignored,
        "passed": passed,
        "not_applicable": na,
        "pass_rate": pass_rate(passed, failed),
        "servers_with_failed": servers_failed,
        "weak_passwords": session.scalar(select(func.count()).select_from(weak_sub)) or 0,
        "servers_with_weak_passwords": session.scalar(select(func.count(func.distinct(weak_sub.c.server_id))))
        or 0,
        "complexity_failed": session.scalar(complexity) or 0,
        "top_servers": [{"server_id": t.id, "server_name": t.name, "failed": int(t.n)} for t in top],
    }
