"""Vulnerability findings: ingest from agent scans, fixed on rescan, ignore / unignore, whitelist, views.

States: ``unfixed`` (open, counts as a risk), ``ignored`` (by an operator, or by a whitelist rule:
``whitelist_rule_id`` set), ``fixed`` (a complete rescan no longer found it; kept ``FIXED_KEEP_DAYS``).
A scan's findings arrive in parts (records of ``vuln_findings``); the last part closes the scan: when
every finding the agent announced has arrived, the server's findings that this scan did not report are
fixed. A scan whose parts did not all arrive fixes nothing (better a stale finding than a false fix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, case, cast, delete, func, or_, select, update
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.core.ids import sha256_hex
from hostward.manager.audit import service as audit
from hostward.manager.risk.state import refresh_risk_counts, state_for
from hostward.manager.servers.models import Server
from hostward.manager.vulns.models import FINDING_STATES, VULN_SEVERITIES, VulnFinding, VulnWhitelistRule
from hostward.manager.vulns.schemas import FindingIn, FindingsRecord

RECORD_TOPIC = "vuln_findings"
FIXED_KEEP_DAYS = 7
MAX_HANDLE = 500
_VULN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
SEVERITY_RANK = {name: rank for rank, name in enumerate(VULN_SEVERITIES)}


def severity_rank() -> Any:
    """SQL expression ordering severities critical (0) .. unknown (4)."""
    return case(SEVERITY_RANK, value=VulnFinding.severity, else_=len(VULN_SEVERITIES))


def _matches_id(vuln_id: str) -> Any:
    # ids is a JSON list of plain ids (validated: no quotes or wildcards), so a text match on the
    # quoted id finds aliases on SQLite and PostgreSQL alike.
    return or_(VulnFinding.vuln_id == vuln_id, cast(VulnFinding.ids, String).like(f'%"{vuln_id}"%'))


def check_vuln_id(vuln_id: str) -> str:
    vuln_id = vuln_id.strip()
    if not _VULN_ID.match(vuln_id):
        raise Invalid("vuln_id: an advisory or CVE id (letters, digits, '.', '_', ':', '-')")
    return vuln_id


# ---- ingest -------------------------------------------------------------------------------------------


def _rule_for(rules: list[VulnWhitelistRule], server_id: str, ids: list[str]) -> VulnWhitelistRule | None:
    for rule in rules:
        if rule.vuln_id in ids and (rule.server_ids is None or server_id in rule.server_ids):
            return rule
    return None


def _apply(row: VulnFinding, f: FindingIn) -> None:
    row.ids = list(dict.fromkeys(f.ids))
    row.vuln_id = f.ids[0][:128]
    row.cves = [i for i in row.ids if i.startswith("CVE-")]
    row.package = f.package
    row.binaries = f.binaries
    row.installed_version = f.installed_version
    row.fixed_version = f.fixed_version
    row.severity = f.severity
    row.cvss_score = f.cvss_score
    row.cvss_vector = f.cvss_vector
    row.ecosystem = f.ecosystem
    row.manager = f.manager
    row.summary = f.summary
    row.fix_command = f.fix_command
    row.remediation = f.remediation
    row.location = f.location


def ingest_findings(session: Session, server: Server, data: dict[str, Any], now: datetime) -> None:
    """One ``vuln_findings`` record: upsert its findings; the last part closes the scan."""
    record = FindingsRecord.model_validate(data)
    if record.part >= record.parts:
        raise ValueError(f"part {record.part} of {record.parts}")
    rules = list(session.scalars(select(VulnWhitelistRule)))
    hashes = {sha256_hex(f.key): f for f in record.findings}
    existing: dict[str, VulnFinding] = {}
    if hashes:
        existing = {
            row.key_hash: row
            for row in session.scalars(
                select(VulnFinding).where(
                    VulnFinding.server_id == server.id, VulnFinding.key_hash.in_(list(hashes))
                )
            )
        }
    for key_hash, f in hashes.items():
        row = existing.get(key_hash)
        if row is None:
            row = VulnFinding(
                server_id=server.id, key=f.key, key_hash=key_hash, first_seen=now, status="unfixed"
            )
            session.add(row)
        elif row.status == "fixed":
            row.status, row.fixed_at, row.handled_by, row.handled_at = "unfixed", None, None, None
            if row.fix_status in ("fixed", "reboot"):  # the fix did not hold: found again
                row.fix_status = None
        _apply(row, f)
        row.last_seen = now
        row.last_scan_id = record.scan_id
        rule = _rule_for(rules, server.id, row.ids)
        if rule is not None and row.status == "unfixed":
            row.status = "ignored"
            row.whitelist_rule_id = rule.id
            row.handled_by = "system"
            row.handled_at = now
            row.remark = f"whitelist rule {rule.id}"
            rule.hits += 1
    session.flush()
    if record.part == record.parts - 1:
        _close_scan(session, server, record, now)


def _close_scan(session: Session, server: Server, record: FindingsRecord, now: datetime) -> None:
    seen = (
        session.scalar(
            select(func.count()).where(
                VulnFinding.server_id == server.id, VulnFinding.last_scan_id == record.scan_id
            )
        )
        or 0
    )
    if seen == record.total:
        session.execute(
            update(VulnFinding)
            .where(
                VulnFinding.server_id == server.id,
                VulnFinding.status.in_(("unfixed", "ignored")),
                VulnFinding.last_scan_id != record.scan_id,
            )
            .values(status="fixed", fixed_at=now)
            .execution_options(synchronize_session=False)
        )
    state = state_for(session, server.id)
    state.vuln_scanned_at = now
    state.vuln_scan_id = record.scan_id
    state.vuln_distro = (record.distro or "")[:128]
    state.vuln_packages = record.packages
    state.vuln_advisories = record.advisories
    state.vuln_backports = record.suppressed_backports
    state.vuln_feed_issues = record.feed_issues[:50]
    refresh_risk_counts(session, server)


# ---- handling -----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    id: str
    ok: bool
    error: HostwardError | None = None


def get_finding(session: Session, finding_id: str) -> VulnFinding:
    row = session.get(VulnFinding, finding_id)
    if row is None:
        raise NotFound(f"vulnerability finding {finding_id} not found")
    return row


def handle(
    session: Session, finding_ids: list[str], action: str, *, remark: str, actor: str, now: datetime
) -> list[Outcome]:
    """``ignore`` (unfixed -> ignored) or ``unignore`` (ignored by hand -> unfixed), each on its own."""
    if action not in ("ignore", "unignore"):
        raise Invalid("action must be ignore or unignore")
    if not finding_ids or len(finding_ids) > MAX_HANDLE:
        raise Invalid(f"finding_ids: 1 to {MAX_HANDLE} ids")
    outcomes: list[Outcome] = []
    touched: set[str] = set()
    for finding_id in dict.fromkeys(finding_ids):
        try:
            with session.begin_nested():
                row = get_finding(session, finding_id)
                if action == "ignore":
                    if row.status != "unfixed":
                        raise Conflict(
                            f"only unfixed vulnerabilities can be ignored (this one is {row.status})"
                        )
                    row.status = "ignored"
                else:
                    if row.status != "ignored":
                        raise Conflict(
                            f"only ignored vulnerabilities can be unignored (this one is {row.status})"
                        )
                    if row.whitelist_rule_id:
                        raise Conflict("ignored by a whitelist rule: delete the rule instead")
                    row.status = "unfixed"
                row.handled_by, row.handled_at, row.remark = actor, now, remark[:2000]
                audit.record(
                    session,
                    actor,
                    f"vuln_{action}",
                    target_type="vulnerability",
                    target_id=row.id,
                    target_name=f"{row.vuln_id} {row.package}"[:255],
                    remark=remark,
                    server_id=row.server_id,
                )
                touched.add(row.server_id)
            outcomes.append(Outcome(finding_id, True))
        except HostwardError as exc:
            outcomes.append(Outcome(finding_id, False, exc))
    _refresh(session, touched)
    return outcomes


def _refresh(session: Session, server_ids: set[str]) -> None:
    for server_id in sorted(server_ids):
        server = session.get(Server, server_id)
        if server is not None:
            refresh_risk_counts(session, server)


# ---- whitelist ----------------------------------------------------------------------------------------


def create_rule(
    session: Session,
    *,
    vuln_id: str,
    server_ids: list[str] | None,
    remark: str,
    actor: str,
    now: datetime,
) -> tuple[VulnWhitelistRule, int]:
    """Add a rule and ignore the open findings it matches; returns the rule and how many it matched."""
    vuln_id = check_vuln_id(vuln_id)
    scope = None if server_ids is None else list(dict.fromkeys(server_ids))
    if scope is not None:
        if not scope:
            raise Invalid("server_ids: name at least one server, or omit it for all servers")
        for sid in scope:
            if session.get(Server, sid) is None:
                raise NotFound(f"server {sid} not found")
    rule = VulnWhitelistRule(
        vuln_id=vuln_id, server_ids=scope, remark=remark[:2000], created_by=actor, created_at=now, hits=0
    )
    session.add(rule)
    session.flush()
    stmt = select(VulnFinding).where(VulnFinding.status == "unfixed", _matches_id(vuln_id))
    if scope is not None:
        stmt = stmt.where(VulnFinding.server_id.in_(scope))
    touched: set[str] = set()
    for row in session.scalars(stmt):
        if vuln_id not in row.ids and row.vuln_id != vuln_id:
            continue
        row.status, row.whitelist_rule_id = "ignored", rule.id
        row.handled_by, row.handled_at, row.remark = actor, now, f"whitelist rule {rule.id}"
        touched.add(row.server_id)
        rule.hits += 1
    audit.record(
        session,
        actor,
        "add_vuln_whitelist",
        target_type="vuln_whitelist",
        target_id=rule.id,
        target_name=vuln_id,
        remark=remark,
        servers="all" if scope is None else len(scope),
        matched=rule.hits,
    )
    _refresh(session, touched)
    return rule, rule.hits


def list_rules(session: Session) -> list[VulnWhitelistRule]:
    return list(session.scalars(select(VulnWhitelistRule).order_by(VulnWhitelistRule.created_at.desc())))


def delete_rule(session: Session, rule_id: str, *, actor: str) -> int:
    """Delete a rule; the findings it ignored are open again. Returns how many."""
    rule = session.get(VulnWhitelistRule, rule_id)
    if rule is None:
        raise NotFound("vulnerability whitelist rule not found")
    rows = list(
        session.scalars(
            select(VulnFinding).where(
                VulnFinding.whitelist_rule_id == rule.id, VulnFinding.status == "ignored"
            )
        )
    )
    for row in rows:
        row.status, row.whitelist_rule_id, row.handled_by, row.handled_at = "unfixed", None, None, None
    session.execute(
        update(VulnFinding)
        .where(VulnFinding.whitelist_rule_id == rule.id)
        .values(whitelist_rule_id=None)
        .execution_options(synchronize_session=False)
    )
    session.delete(rule)
    audit.record(
        session,
        actor,
        "remove_vuln_whitelist",
        target_type="vuln_whitelist",
        target_id=rule_id,
        target_name=rule.vuln_id,
        reopened=len(rows),
    )
    _refresh(session, {r.server_id for r in rows})
    return len(rows)


# ---- views --------------------------------------------------------------------------------------------


def list_findings(
    session: Session,
    *,
    server_id: str | None = None,
    vuln_id: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    region: str | None = None,
    q: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[VulnFinding, str]], int]:
    """Findings with their server's name, most severe first."""
    stmt = select(VulnFinding, Server.name).join(Server, Server.id == VulnFinding.server_id)
    if server_id:
        stmt = stmt.where(VulnFinding.server_id == server_id)
    if vuln_id:
        stmt = stmt.where(_matches_id(check_vuln_id(vuln_id)))
    if status:
        if status not in FINDING_STATES:
            raise Invalid(f"status must be one of {', '.join(FINDING_STATES)}")
        stmt = stmt.where(VulnFinding.status == status)
    if severity:
        if severity not in VULN_SEVERITIES:
            raise Invalid(f"severity must be one of {', '.join(VULN_SEVERITIES)}")
        stmt = stmt.where(VulnFinding.severity == severity)
    if region:
        stmt = stmt.where(Server.region == region)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(
            or_(VulnFinding.package.ilike(like), VulnFinding.vuln_id.ilike(like), Server.name.ilike(like))
        )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(
            severity_rank(), VulnFinding.cvss_score.desc().nulls_last(), VulnFinding.package, VulnFinding.id
        )
        .offset(offset)
        .limit(limit)
    ).all()
    return [(row, name) for row, name in rows], total


def _count_if(condition: Any) -> Any:
    return func.sum(case((condition, 1), else_=0))


def list_vulnerabilities(
    session: Session,
    *,
    region: str | None = None,
    severity: str | None = None,
    q: str | None = None,
    include_fixed: bool = False,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int]:
    """Vulnerability view: one row per vulnerability (primary id) over the servers' findings."""
    base = select(VulnFinding).join(Server, Server.id == VulnFinding.server_id)
    if region:
        base = base.where(Server.region == region)
    if severity:
        base = base.where(VulnFinding.severity == severity)
    if q:
        like = f"%{q.strip()}%"
        base = base.where(or_(VulnFinding.vuln_id.ilike(like), VulnFinding.package.ilike(like)))
    if not include_fixed:
        base = base.where(VulnFinding.status != "fixed")
    sub = base.subquery()
    rank = func.min(case(SEVERITY_RANK, value=sub.c.severity, else_=len(VULN_SEVERITIES)))
    grouped = select(
        sub.c.vuln_id,
        rank.label("rank"),
        func.max(sub.c.cvss_score).label("cvss"),
        func.max(sub.c.summary).label("summary"),
        func.min(sub.c.package).label("package_min"),
        func.max(sub.c.package).label("package_max"),
        func.count(func.distinct(case((sub.c.status == "unfixed", sub.c.server_id), else_=None))).label(
            "unfixed"
        ),
        _count_if(sub.c.status == "ignored").label("ignored"),
        _count_if(sub.c.status == "fixed").label("fixed"),
        func.max(sub.c.last_seen).label("last_seen"),
    ).group_by(sub.c.vuln_id)
    total = session.scalar(select(func.count()).select_from(grouped.subquery())) or 0
    rows = session.execute(
        grouped.order_by(rank, func.max(sub.c.cvss_score).desc().nulls_last(), sub.c.vuln_id)
        .offset(offset)
        .limit(limit)
    ).all()
    out = []
    for r in rows:
        packages = list(dict.fromkeys([r.package_min, r.package_max]))
        out.append(
            {
                "vuln_id": r.vuln_id,
                "severity": VULN_SEVERITIES[min(int(r.rank), len(VULN_SEVERITIES) - 1)],
                "cvss_score": r.cvss,
                "summary": r.summary or "",
                "packages": packages,
                "unfixed_servers": int(r.unfixed or 0),
                "ignored": int(r.ignored or 0),
                "fixed": int(r.fixed or 0),
                "last_seen": r.last_seen,
            }
        )
    return out, total


def list_server_view(
    session: Session, *, region: str | None = None, q: str | None = None, offset: int = 0, limit: int = 50
) -> tuple[list[dict[str, Any]], int]:
    """Server view: servers with findings, most unfixed first."""
    from hostward.manager.risk.models import RiskServerState

    stmt = (
        select(
            Server.id,
            Server.name,
            Server.asset_importance,
            _count_if(VulnFinding.status == "unfixed").label("unfixed"),
            _count_if(VulnFinding.status == "ignored").label("ignored"),
            _count_if(VulnFinding.status == "fixed").label("fixed"),
            *[
                _count_if((VulnFinding.status == "unfixed") & (VulnFinding.severity == s)).label(s)
                for s in VULN_SEVERITIES
            ],
            RiskServerState.vuln_scanned_at,
        )
        .join(VulnFinding, VulnFinding.server_id == Server.id)
        .outerjoin(RiskServerState, RiskServerState.server_id == Server.id)
        .group_by(Server.id, Server.name, Server.asset_importance, RiskServerState.vuln_scanned_at)
    )
    if region:
        stmt = stmt.where(Server.region == region)
    if q:
        stmt = stmt.where(Server.name.ilike(f"%{q.strip()}%"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(_count_if(VulnFinding.status == "unfixed").desc(), Server.name)
        .offset(offset)
        .limit(limit)
    ).all()
    return [
        {
            "server_id": r.id,
            "server_name": r.name,
            "asset_importance": r.asset_importance,
            "unfixed": int(r.unfixed or 0),
            "ignored": int(r.ignored or 0),
            "fixed": int(r.fixed or 0),
            "by_severity": {s: int(getattr(r, s) or 0) for s in VULN_SEVERITIES},
            "last_scan_at": r.vuln_scanned_at,
        }
        for r in rows
    ], total


def statistics(session: Session, now: datetime, region: str | None = None) -> dict[str, Any]:
    from hostward.manager.scans.models import Scan
    from hostward.manager.vulns import feeds
    from hostward.manager.vulns.models import VulnFeed

    base = select(VulnFinding).join(Server, Server.id == VulnFinding.server_id)
    if region:
        base = base.where(Server.region == region)
    sub = base.subquery()
    by_severity = {
        str(k): int(v)
        for k, v in session.execute(
            select(sub.c.severity, func.count()).where(sub.c.status == "unfixed").group_by(sub.c.severity)
        )
    }
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    handled = sub.c.status.in_(("ignored", "fixed"))
    handled_at = func.coalesce(sub.c.fixed_at, sub.c.handled_at)
    return {
        "unfixed": sum(by_severity.values()),
        "critical": by_severity.get("critical", 0),
        "by_severity": {s: by_severity.get(s, 0) for s in VULN_SEVERITIES},
        "servers_with_vulnerabilities": session.scalar(
            select(func.count(func.distinct(sub.c.server_id))).where(sub.c.status == "unfixed")
        )
        or 0,
        "handled_today": session.scalar(select(func.count()).where(handled, handled_at >= day_start)) or 0,
        "handled_total": session.scalar(select(func.count()).where(handled)) or 0,
        "ignored": session.scalar(select(func.count()).where(sub.c.status == "ignored")) or 0,
        "fixed": session.scalar(select(func.count()).where(sub.c.status == "fixed")) or 0,
        "advisories": feeds.advisory_count(session),
        "feeds": session.scalar(select(func.count()).select_from(VulnFeed)) or 0,
        "scans": session.scalar(select(func.count()).where(Scan.kind == "vulnerability")) or 0,
    }


def purge_fixed(session: Session, now: datetime) -> int:
    """Fixed findings stay listed ``FIXED_KEEP_DAYS`` days, then go."""
    result = session.execute(
        delete(VulnFinding).where(
            VulnFinding.status == "fixed", VulnFinding.fixed_at < now - timedelta(days=FIXED_KEEP_DAYS)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)
