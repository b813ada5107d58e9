"""Dashboard figures: agent status ring, protection, risky servers, quota usage, open alarms."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hostward.manager.alarms import service as alarms
from hostward.manager.quotas import service as quotas
from hostward.manager.servers import service as servers


def overview(session: Session, region: str | None = None) -> dict[str, Any]:
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
    }
