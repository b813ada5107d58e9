"""The manager's built-in periodic tasks and job kinds, listed explicitly.

Domain services are imported when a task runs, not when this module is imported, so building the
registry has no side effects and does not pull every domain in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.manager.scheduler.registry import JobRun, Registry
from hostward.manager.settings import ManagerSettings

AGENT_STATUS_SWEEP_S = 5
QUOTA_STATUS_REFRESH_S = 60
SCAN_TIMEOUTS_S = 30
DAILY_SCANS_S = 60
RETENTION_S = 3600
VULN_SCANS_S = 60
RISK_RETENTION_S = 3600
SECURITY_SCORE_S = 300
DAILY_NOTIFICATIONS_S = 60


def agent_status_sweep(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Servers whose heartbeats stopped go offline (and their protection to protection_exception)."""
    from hostward.manager.agentlink.service import sweep_agent_status

    return sweep_agent_status(session, now, settings)


def quota_status_refresh(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Quotas move to expired / frozen as their expiry and grace period pass."""
    from hostward.manager.quotas.service import refresh_quota_statuses

    return refresh_quota_statuses(session, now, settings.quota_grace_days, settings)


def scan_timeouts(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Queued or running scans past their deadline become timed_out."""
    from hostward.manager.scans.service import expire_scans

    return expire_scans(session, now)


def daily_scans(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Queue each protected server's daily full scan when its slot in the scan window comes."""
    from hostward.manager.scans.service import plan_daily_scans

    return plan_daily_scans(session, now, settings)


def retention(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Delete expired alarms, idempotency keys, login attempts, finished jobs and commands."""
    from hostward.manager.scheduler.retention import purge_expired

    return purge_expired(session, now, settings)


def vuln_scans(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Queue scheduled vulnerability scans (weekly by default, window 00:00-07:00 server time)."""
    from hostward.manager.vulns.schedule import plan_vuln_scans

    return plan_vuln_scans(session, now, settings)


def risk_retention(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Fixed vulnerabilities stay listed 7 days, then go."""
    from hostward.manager.vulns.service import purge_fixed

    return purge_fixed(session, now)


def security_score(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Today's security score and risk counts (all regions and each region), for the 7-day trend."""
    from hostward.manager.risk.score import snapshot_all

    return snapshot_all(session, now)


def daily_notifications(session: Session, now: datetime, settings: ManagerSettings) -> object:
    """Queue the daily notification summary once its time of day has come."""
    from hostward.manager.notify.service import plan_daily

    return plan_daily(session, now)


def notify_send(session: Session, run: JobRun) -> object:
    """Send one notification (e-mail or webhook); a failure is retried with backoff."""
    from hostward.manager.notify.service import run_job

    return run_job(session, run)


def builtin_registry() -> Registry:
    """A registry holding every built-in periodic task and job kind."""
    registry = Registry()
    registry.add_periodic("agent_status_sweep", AGENT_STATUS_SWEEP_S, agent_status_sweep)
    registry.add_periodic("quota_status_refresh", QUOTA_STATUS_REFRESH_S, quota_status_refresh)
    registry.add_periodic("scan_timeouts", SCAN_TIMEOUTS_S, scan_timeouts)
    registry.add_periodic("daily_scans", DAILY_SCANS_S, daily_scans)
    registry.add_periodic("retention", RETENTION_S, retention)
    registry.add_periodic("vuln_scans", VULN_SCANS_S, vuln_scans)
    registry.add_periodic("risk_retention", RISK_RETENTION_S, risk_retention)
    registry.add_periodic("security_score", SECURITY_SCORE_S, security_score)
    registry.add_periodic("daily_notifications", DAILY_NOTIFICATIONS_S, daily_notifications)
    registry.add_job("notify_send", notify_send, max_attempts=6)
    return registry
