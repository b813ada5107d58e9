"""Dashboard figures: agent status ring, protection, risky servers, quota usage, open alarms."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from hostward.core.clock import utcnow
from hostward.manager.alarms import service as alarms
from hostward.manager.quotas import service as quotas
from hostward.manager.servers import service as servers


def overview(session: Session, region: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    from hostward.manager.risk import score

    at = now or utcnow()
    security = score.compute(session, at, region)
    stats = servers.statistics(session, region)
    protection = stats["protection_status"]
    agent = stats["agent_status"]
    return {
        "servers": stats["total"],
        "agent_status": {k: agent.get(k, 0) for k in ("online", "offline", "not_installed")},
        "protected": protection.get("opened", 0),
        "interrupted": protection.get("protection_exception", 0),
        "unprotected": protection.get("closed", 0),
        "risky": stats["scan_result"].get("risk", 0),
        "scan_result": stats["scan_result"],
        "editions": stats["edition"],
        "quotas": quotas.usage_summary(session, region),
        "alarms": alarms.statistics(session, region=region),
        # Security score with its "Handle now" deductions, and the 7-day risk trend (risk/score.py).
        "security_score": security,
        "risk_trend": score.trend(session, at, region, live=security),
    }
