"""Per-server risk state and the risk counts shown on the server (vulnerabilities, baseline)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostward.manager.alarms import service as alarms
from hostward.manager.baseline.models import BaselineCheckResult, WeakPassword
from hostward.manager.risk.models import RiskServerState
from hostward.manager.servers.models import Server
from hostward.manager.vulns.models import VulnFinding


def state_for(session: Session, server_id: str) -> RiskServerState:
    """The server's risk state row, created on first use."""
    state = session.get(RiskServerState, server_id)
    if state is None:
        state = RiskServerState(server_id=server_id)
        session.add(state)
        session.flush()
    return state


def open_vulnerabilities(session: Session, server_id: str) -> int:
    return (
        session.scalar(
            select(func.count()).where(VulnFinding.server_id == server_id, VulnFinding.status == "unfixed")
        )
        or 0
    )


def open_baseline_risks(session: Session, server_id: str) -> int:
    """Failed checks not ignored + weak-password accounts + a failed (not ignored) complexity policy."""
    failed = (
        session.scalar(
            select(func.count()).where(
                BaselineCheckResult.server_id == server_id,
                BaselineCheckResult.result == "failed",
                BaselineCheckResult.ignored.is_(False),
            )
        )
        or 0
    )
    weak = session.scalar(select(func.count()).where(WeakPassword.server_id == server_id)) or 0
    state = session.get(RiskServerState, server_id)
    complexity = int(state is not None and state.complexity_passed is False and not state.complexity_ignored)
    return int(failed) + int(weak) + complexity


def refresh_risk_counts(session: Session, server: Server) -> None:
    """Recount the server's open vulnerabilities and baseline risks; its scan result follows."""
    session.flush()
    server.risk_vulnerabilities = open_vulnerabilities(session, server.id)
    server.risk_baseline = open_baseline_risks(session, server.id)
    alarms.refresh_server_risk(session, server)
