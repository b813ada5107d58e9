"""One-click fix, verify and handling history of vulnerability findings.

Fix: the operator acknowledges that nothing is backed up and services may restart; each server gets one
``vuln_fix`` command (its findings grouped by package) and the findings are ``fixing``. The agent
upgrades the packages, re-checks them and answers with a ``vuln_fix`` record per package: ``fixed``
(the finding is fixed, or ``reboot`` when a restart is still needed) or ``failed`` with the reason. A
command the agent refused, or that expired undelivered, fails its findings with the agent's reason
(``settle``); so does silence for ``FIX_STALE``. Verify queues a vulnerability scan of the servers: a
rescan is what closes findings for good. Every request and outcome is in the audit record, which is
also the vulnerability's handling history.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid
from hostward.manager.agentlink import service as agentlink
from hostward.manager.audit import service as audit
from hostward.manager.audit.models import AuditRecord
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
from hostward.manager.vulns.models import VulnFinding
from hostward.manager.vulns.schemas import FixRecord
from hostward.manager.vulns.service import MAX_HANDLE, check_vuln_id, get_finding

FIX_COMMAND = "vuln_fix"
FIX_TOPIC = "vuln_fix"
FIXABLE_MANAGERS = ("dpkg",)
MAX_PACKAGES_PER_COMMAND = 50
FIX_STALE = timedelta(hours=2)
# A fix waits this long for an offline agent before the command expires.
FIX_COMMAND_TTL = timedelta(hours=1)
MAX_ALIAS_ROWS = 200


def _server_ready(server: Server | None, now: datetime, settings: ManagerSettings) -> Server:
    server = require_online(server, now, settings)
    if server.protection_status != "opened":
        raise Conflict(f"server {server.name} is not protected; enable protection first")
    return server


def _check_fixable(session: Session, row: VulnFinding) -> None:
    if row.status != "unfixed":
        raise Conflict(f"only unfixed vulnerabilities can be fixed (this one is {row.status})")
    refuse_if_running(session, row, "vulnerability")
    if row.manager not in FIXABLE_MANAGERS:
        how = f"; run: {row.fix_command}" if row.fix_command else ""
        raise Conflict(f"no one-click fix for {row.manager or 'these'} packages{how}")


def request_fix(
    session: Session,
    finding_ids: list[str],
    *,
    acknowledge: bool,
    remark: str,
    actor: str,
    now: datetime,
    settings: ManagerSettings,
) -> FixRequest:
    """Queue one ``vuln_fix`` command per server for the fixable findings; each id succeeds or fails."""
    check_request(
        acknowledge,
        "a fix upgrades packages without a backup and may restart services",
        finding_ids,
        "finding_ids",
        MAX_HANDLE,
    )

    def load(finding_id: str) -> VulnFinding:
        row = get_finding(session, finding_id)
        _check_fixable(session, row)
        _server_ready(session.get(Server, row.server_id), now, settings)
        return row

    outcomes, chosen = choose(finding_ids, load)
    commands: dict[str, str] = {}
    for server_id, rows in chosen.items():
        packages: dict[str, dict[str, Any]] = {}
        for row in rows:
            item = packages.setdefault(
                row.package,
                {
                    "package": row.package,
                    "manager": row.manager,
                    "binaries": list(row.binaries or [row.package]),
                    "fixed_versions": [],
                    "finding_ids": [],
                    "fix_command": row.fix_command or "",
                },
            )
            item["finding_ids"].append(row.id)
            # The agent upgrades to at least the highest of them (compared with dpkg's rules there).
            if row.fixed_version and row.fixed_version not in item["fixed_versions"]:
                item["fixed_versions"].append(row.fixed_version)
        items = list(packages.values())
        for start in range(0, len(items), MAX_PACKAGES_PER_COMMAND):
            part = items[start : start + MAX_PACKAGES_PER_COMMAND]
            command = agentlink.queue_command(
                session, server_id, FIX_COMMAND, {"packages": part, "actor": actor}, now, ttl=FIX_COMMAND_TTL
            )
            commands[server_id] = command.id
            ids = {i for p in part for i in p["finding_ids"]}
            for row in rows:
                if row.id not in ids:
                    continue
                mark_fixing(row, command.id, actor, now)
                row.fix_finished_at = None
                audit.record(
                    session,
                    actor,
                    "vuln_fix",
                    target_type="vulnerability",
                    target_id=row.id,
                    target_name=f"{row.vuln_id} {row.package}"[:255],
                    remark=remark,
                    server_id=row.server_id,
                    vuln_id=row.vuln_id,
                    command_id=command.id,
                    fix_command=row.fix_command or "",
                )
    return FixRequest([outcomes[i] for i in dict.fromkeys(finding_ids)], commands)


def ingest_fix(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    """The agent's ``vuln_fix`` record: each package's findings become fixed (or reboot) or failed."""
    record = FixRecord.model_validate(data)
    for result in record.results:
        rows = [
            row
            for row in session.scalars(
                select(VulnFinding).where(
                    VulnFinding.server_id == server.id, VulnFinding.id.in_(result.finding_ids)
                )
            )
        ]
        for row in rows:
            _finish(
                session, row, result.status, result.detail, result.reboot_required, now, record.command_id
            )
    refresh_risk_counts(session, server)


def _finish(
    session: Session,
    row: VulnFinding,
    status: str,
    detail: str,
    reboot: bool,
    now: datetime,
    command_id: str,
) -> None:
    if status == "fixed":
        row.fix_status = "reboot" if reboot else "fixed"
        if row.status == "unfixed":
            row.status, row.fixed_at = "fixed", now
            row.handled_by, row.handled_at = row.fix_by or "system", now
    else:
        row.fix_status = "failed"
    row.fix_detail = detail[:4000]
    row.fix_finished_at = now
    audit.record(
        session,
        "system",
        f"vuln_fix_{row.fix_status}",
        target_type="vulnerability",
        target_id=row.id,
        target_name=f"{row.vuln_id} {row.package}"[:255],
        remark=detail[:2000],
        server_id=row.server_id,
        vuln_id=row.vuln_id,
        command_id=command_id,
        requested_by=row.fix_by or "",
    )


def settle(session: Session, now: datetime) -> int:
    """Fail ``fixing`` findings whose command the agent refused or that expired, or that went silent."""
    rows = list(session.scalars(select(VulnFinding).where(VulnFinding.fix_status == "fixing")))
    touched: set[str] = set()
    stale_reason = f"no result from the agent within {FIX_STALE.total_seconds() / 3600:.0f} h"
    for row in rows:
        reason = unsettled_reason(session, row, now, FIX_STALE, stale_reason)
        if reason:
            _finish(session, row, "failed", reason, False, now, row.fix_command_id or "")
            touched.add(row.server_id)
    refresh_servers(session, touched)
    return len(touched)


def verify(
    session: Session, finding_ids: list[str], *, actor: str, now: datetime, settings: ManagerSettings
) -> list[Any]:
    """Rescan the servers of ``finding_ids`` (a manual vulnerability scan each): fixed ones close."""
    from hostward.manager.scans import service as scans

    if not finding_ids or len(finding_ids) > MAX_HANDLE:
        raise Invalid(f"finding_ids: 1 to {MAX_HANDLE} ids")
    rows = [get_finding(session, fid) for fid in dict.fromkeys(finding_ids)]
    servers = list(dict.fromkeys(r.server_id for r in rows))
    created = scans.create_scans(session, servers, "vulnerability", "manual", now, settings, actor)
    for row in rows:
        audit.record(
            session,
            actor,
            "vuln_verify",
            target_type="vulnerability",
            target_id=row.id,
            target_name=f"{row.vuln_id} {row.package}"[:255],
            server_id=row.server_id,
            vuln_id=row.vuln_id,
        )
    return created


def history(
    session: Session, vuln_id: str, *, offset: int = 0, limit: int = 50
) -> tuple[list[AuditRecord], int]:
    """Audit records about a vulnerability: its findings' ignore / unignore / fix / verify and outcomes,
    and whitelist rules for it (an alias id finds the same records)."""
    from sqlalchemy import func

    from hostward.manager.vulns.service import _matches_id

    vuln_id = check_vuln_id(vuln_id)
    finding_ids = select(VulnFinding.id).where(_matches_id(vuln_id))
    # every id the findings know this vulnerability by: a whitelist rule may name any of them
    aliases = {vuln_id}
    for ids in session.scalars(select(VulnFinding.ids).where(_matches_id(vuln_id)).limit(MAX_ALIAS_ROWS)):
        aliases.update(i for i in ids or [] if isinstance(i, str))
    stmt = select(AuditRecord).where(
        or_(
            and_(
                AuditRecord.target_type == "vulnerability",
                or_(
                    AuditRecord.target_id.in_(finding_ids),
                    *[AuditRecord.target_name.like(f"{a} %") for a in sorted(aliases)[:50]],
                ),
            ),
            and_(AuditRecord.target_type == "vuln_whitelist", AuditRecord.target_name.in_(aliases)),
        )
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(AuditRecord.at.desc(), AuditRecord.id).offset(offset).limit(limit)
    ).all()
    return list(rows), total
