"""Security score 0-100 (reference §9.3) for the categories hostward has, and its daily snapshots.

Start at 100 and subtract each category's deductions, capped per category: vulnerabilities 20,
compliance 20, intrusions 30, unprotected servers 10 (asset-port and image categories do not exist
here). Items marked "x count" multiply by how many there are:

| category        | item                                                         | points       |
|-----------------|--------------------------------------------------------------|--------------|
| vulnerabilities | unfixed critical / high / medium / low (unknown = low) x     | 10/3/1/0.1   |
| vulnerabilities | no vulnerability scan of any protected server in 30 days     | 15           |
| compliance      | failed, not ignored, checks high (and critical) / medium / low x | 10/3/1   |
| compliance      | weak-password accounts x                                     | 10           |
| compliance      | weak-password policy off on a protected server               | 10           |
| compliance      | no baseline check of any protected server in 30 days         | 10           |
| intrusions      | unhandled alarms critical / high / medium / low x            | 10/3/1/0.1   |
| intrusions      | servers but none protected ("no security policies")          | 30           |
| intrusions      | login security policy off on a protected server              | 10           |
| unprotected     | unprotected servers by importance important / general / test x | 1/0.5/0.1  |

Weak-password alarms (``login_1003``) are counted under compliance only, not again as intrusions. The
score is computed when asked (a handful of aggregate queries), so it follows scans and handling at once;
``snapshot`` stores one row per day and region for the 7-day trend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from hostward.manager.alarms.models import Alarm
from hostward.manager.baseline.models import BaselineCheckResult, WeakPassword
from hostward.manager.baseline.policy import WEAK_PASSWORD_POLICY
from hostward.manager.db.engine import is_postgres
from hostward.manager.policies.models import Policy
from hostward.manager.risk.models import RiskServerState, ScoreSnapshot
from hostward.manager.servers.models import Server
from hostward.manager.vulns.models import VulnFinding

CAPS = {"vulnerabilities": 20.0, "compliance": 20.0, "intrusions": 30.0, "unprotected": 10.0}
CATEGORY_LABELS = {
    "vulnerabilities": "Vulnerabilities",
    "compliance": "Compliance",
    "intrusions": "Intrusions",
    "unprotected": "Unprotected servers",
}
SEVERITY_POINTS = {"critical": 10.0, "high": 3.0, "medium": 1.0, "low": 0.1}
BASELINE_POINTS = {"critical": 10.0, "high": 10.0, "medium": 3.0, "low": 1.0}
IMPORTANCE_POINTS = {"important": 1.0, "common": 0.5, "test": 0.1}
STALE_DAYS = 30
TREND_DAYS = 7
LOGIN_SECURITY_POLICY = "login_security"
WEAK_PASSWORD_CLASS = "login_1003"


@dataclass
class Deduction:
    category: str
    key: str
    title: str
    count: int
    points: float  # per item (or once)
    deducted: float  # points x count, before the category cap
    link: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def level(score: int) -> str:
    if score >= 90:
        return "low"
    if score >= 60:
        return "medium"
    return "high"


def _in_region(column: Any, region: str | None) -> Any:
    """``column`` (a server id of another table) belongs to a server of ``region`` (true without one)."""
    if not region:
        return true()
    return column.in_(select(Server.id).where(Server.region == region))


def _server_region(region: str | None) -> Any:
    return Server.region == region if region else true()


def _by(session: Session, column: Any, *where: Any) -> dict[str, int]:
    return {
        str(k): int(v)
        for k, v in session.execute(select(column, func.count()).where(*where).group_by(column))
    }


def _policy_off(session: Session, key: str, region: str | None) -> int:
    """Protected servers whose policy group has policy ``key`` switched off."""
    stmt = (
        select(func.count())
        .select_from(Server)
        .join(Policy, Policy.group_id == Server.policy_group_id)
        .where(Server.protection_status == "opened", Policy.key == key, Policy.enabled.is_(False))
    )
    if region:
        stmt = stmt.where(Server.region == region)
    return session.scalar(stmt) or 0


def compute(session: Session, now: datetime, region: str | None = None) -> dict[str, Any]:
    """The score, its per-category deductions and the current risk counts."""
    items: list[Deduction] = []

    def add(
        category: str, key: str, title: str, count: int, points: float, link: str, multiply: bool = True
    ) -> None:
        if count > 0:
            items.append(
                Deduction(category, key, title, count, points, points * (count if multiply else 1), link)
            )

    vulns = _by(
        session,
        VulnFinding.severity,
        VulnFinding.status == "unfixed",
        _in_region(VulnFinding.server_id, region),
    )
    vulns["low"] = vulns.get("low", 0) + vulns.pop("unknown", 0)
    for sev, points in SEVERITY_POINTS.items():
        add(
            "vulnerabilities",
            f"vuln_{sev}",
            f"Unfixed {sev} vulnerabilities",
            vulns.get(sev, 0),
            points,
            f"/vulnerabilities?severity={sev}",
        )

    protected = (
        session.scalar(
            select(func.count()).where(Server.protection_status == "opened", _server_region(region))
        )
        or 0
    )
    servers = session.scalar(select(func.count()).select_from(Server).where(_server_region(region))) or 0
    cutoff = now - timedelta(days=STALE_DAYS)
    if protected:
        opened = select(Server.id).where(Server.protection_status == "opened", _server_region(region))
        recent = select(func.count()).where(RiskServerState.server_id.in_(opened))
        if not session.scalar(recent.where(RiskServerState.vuln_scanned_at >= cutoff)):
            add(
                "vulnerabilities",
                "no_vuln_scan",
                "No vulnerability scan in the past month",
                1,
                15.0,
                "/vulnerabilities#feeds",
                multiply=False,
            )
        if not session.scalar(recent.where(RiskServerState.baseline_scanned_at >= cutoff)):
            add(
                "compliance",
                "no_baseline_check",
                "No baseline check in the past month",
                1,
                10.0,
                "/baseline",
                multiply=False,
            )

    failed = _by(
        session,
        BaselineCheckResult.severity,
        BaselineCheckResult.result == "failed",
        BaselineCheckResult.ignored.is_(False),
        _in_region(BaselineCheckResult.server_id, region),
    )
    for sev, label in (("high", "high"), ("medium", "medium"), ("low", "low")):
        count = failed.get(sev, 0) + (failed.get("critical", 0) if sev == "high" else 0)
        add(
            "compliance",
            f"baseline_{sev}",
            f"Unhandled {label}-risk baseline items",
            count,
            BASELINE_POINTS[sev],
            f"/baseline?failed=1&severity={sev}",
        )
    weak = (
        session.scalar(
            select(func.count()).select_from(WeakPassword).where(_in_region(WeakPassword.server_id, region))
        )
        or 0
    )
    add("compliance", "weak_passwords", "Weak passwords", weak, 10.0, "/baseline#weak-passwords")
    add(
        "compliance",
        "weak_password_policy",
        "Weak-password detection off on protected servers",
        _policy_off(session, WEAK_PASSWORD_POLICY, region),
        10.0,
        "/policies",
        multiply=False,
    )

    alarms = _by(
        session,
        Alarm.severity,
        Alarm.status == "unhandled",
        Alarm.event_class != WEAK_PASSWORD_CLASS,
        _in_region(Alarm.server_id, region),
    )
    for sev, points in SEVERITY_POINTS.items():
        add(
            "intrusions",
            f"alarms_{sev}",
            f"Unhandled {sev} alarms",
            alarms.get(sev, 0),
            points,
            f"/alarms?status=unhandled&severity={sev}",
        )
    if servers and not protected:
        add(
            "intrusions",
            "no_protection",
            "No server is protected (no security policy applies)",
            1,
            30.0,
            "/servers?protection_status=closed",
            multiply=False,
        )
    add(
        "intrusions",
        "login_security_policy",
        "Login security off on protected servers",
        _policy_off(session, LOGIN_SECURITY_POLICY, region),
        10.0,
        "/policies",
        multiply=False,
    )

    unprotected = _by(
        session, Server.asset_importance, Server.protection_status == "closed", _server_region(region)
    )
    for importance, points in IMPORTANCE_POINTS.items():
        name = {"common": "general"}.get(importance, importance)
        add(
            "unprotected",
            f"unprotected_{importance}",
            f"Unprotected {name} servers",
            unprotected.get(importance, 0),
            points,
            "/servers?protection_status=closed",
        )

    categories: dict[str, dict[str, Any]] = {}
    for category, cap in CAPS.items():
        raw = sum(d.deducted for d in items if d.category == category)
        categories[category] = {
            "label": CATEGORY_LABELS[category],
            "cap": cap,
            "deducted": round(min(cap, raw), 1),
        }
    score = max(0, min(100, round(100 - sum(c["deducted"] for c in categories.values()))))
    items.sort(key=lambda d: (-min(d.deducted, CAPS[d.category]), d.category, d.key))
    risks = {
        "vulnerabilities": sum(vulns.values()),
        "baseline": sum(failed.values()) + int(weak),
        "alarms": sum(alarms.values()),
        "unprotected": sum(unprotected.values()),
    }
    return {
        "score": score,
        "level": level(score),
        "categories": categories,
        "deductions": [d.to_dict() for d in items],
        "risks": risks,
        "computed_at": now,
    }


def snapshot(session: Session, now: datetime, region: str | None = None) -> ScoreSnapshot:
    """Store (or refresh) today's score and risk counts for ``region`` ("" = all regions)."""
    data = compute(session, now, region)
    day = now.date().isoformat()
    key = region or ""
    stmt = select(ScoreSnapshot).where(ScoreSnapshot.day == day, ScoreSnapshot.region == key)
    if is_postgres(session):
        stmt = stmt.with_for_update()
    row = session.scalars(stmt).first()
    if row is None:
        row = ScoreSnapshot(day=day, region=key, score=data["score"], updated_at=now)
        session.add(row)
    row.score = data["score"]
    row.risks = data["risks"]
    row.deductions = data["deductions"][:50]
    row.updated_at = now
    session.flush()
    return row


def snapshot_all(session: Session, now: datetime) -> int:
    """Today's snapshot for all regions together and for each region with servers; returns how many."""
    regions = [r for (r,) in session.execute(select(Server.region).distinct()) if r]
    for region in [None, *regions]:
        snapshot(session, now, region)
    # Keep a quarter of history; the trend shows a week.
    old = (now.date() - timedelta(days=90)).isoformat()
    for row in session.scalars(select(ScoreSnapshot).where(ScoreSnapshot.day < old)):
        session.delete(row)
    return 1 + len(regions)


def trend(
    session: Session,
    now: datetime,
    region: str | None = None,
    days: int = TREND_DAYS,
    live: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One point per day for the last ``days`` days (today live); days without a snapshot have None."""
    today = now.date()
    first = today - timedelta(days=days - 1)
    rows = {
        r.day: r
        for r in session.scalars(
            select(ScoreSnapshot).where(
                ScoreSnapshot.region == (region or ""), ScoreSnapshot.day >= first.isoformat()
            )
        )
    }
    live = live or compute(session, now, region)
    out: list[dict[str, Any]] = []
    for n in range(days):
        day: date = first + timedelta(days=n)
        if day == today:
            out.append({"day": day.isoformat(), "score": live["score"], **live["risks"]})
            continue
        row = rows.get(day.isoformat())
        if row is None:
            out.append({"day": day.isoformat(), "score": None})
        else:
            out.append({"day": day.isoformat(), "score": row.score, **row.risks})
    return out
