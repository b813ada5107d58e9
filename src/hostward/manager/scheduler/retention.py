"""Retention: old rows that only matter for a while are deleted by a periodic task."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, select
from sqlalchemy.orm import Session

from hostward.manager.agentlink.models import AgentCommand
from hostward.manager.auth.models import LoginAttempt
from hostward.manager.scheduler.models import Job
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings

# Idempotency keys outlive any realistic agent outage (the outbox resends within hours, not a week).
INGESTED_EVENT_DAYS = 7
LOGIN_ATTEMPT_DAYS = 1
FINISHED_JOB_DAYS = 7
FINISHED_COMMAND_DAYS = 7


def _deleted(session: Session, stmt: Delete) -> int:
    result = cast(CursorResult[Any], session.execute(stmt.execution_options(synchronize_session=False)))
    return int(result.rowcount or 0)


def purge_expired(session: Session, now: datetime, settings: ManagerSettings) -> dict[str, int]:
    """Delete expired alarms, idempotency keys, login attempts, finished jobs and agent commands.

    Returns the number of rows removed per kind.
    """
    from hostward.manager.agentlink import ingest
    from hostward.manager.alarms import service as alarms
    from hostward.manager.fim import service as fim
    from hostward.manager.wtp import service as wtp

    counts = {"alarms": alarms.purge_old(session, now, settings.alarm_retention_days)}
    if counts["alarms"]:
        # Expired unhandled alarms no longer count as open findings.
        for server in session.scalars(select(Server).where(Server.risk_intrusions > 0)):
            alarms.refresh_server_risk(session, server)
    counts["ingested_events"] = ingest.prune_ingested(session, now, keep_days=INGESTED_EVENT_DAYS)
    counts["fim_changes"] = fim.purge_old(session, now)
    counts["wtp_events"] = wtp.purge_old(session, now)
    counts["login_attempts"] = _deleted(
        session, delete(LoginAttempt).where(LoginAttempt.at < now - timedelta(days=LOGIN_ATTEMPT_DAYS))
    )
    counts["jobs"] = _deleted(
        session,
        delete(Job).where(
            Job.status.in_(("done", "failed")),
            Job.finished_at < now - timedelta(days=FINISHED_JOB_DAYS),
        ),
    )
    counts["agent_commands"] = _deleted(
        session,
        delete(AgentCommand).where(
            AgentCommand.status != "queued",
            AgentCommand.created_at < now - timedelta(days=FINISHED_COMMAND_DAYS),
        ),
    )
    return counts
