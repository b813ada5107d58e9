"""Scheduled vulnerability scans: every ``period_days`` (weekly by default) in the 00:00-07:00 window.

Each protected server gets a random slot in the window (server-local time, as the daily full scan);
at its slot, when a feed is imported, its agent is online and no scan is active there, a
``vulnerability`` scan is queued with trigger ``schedule``. A slot missed by more than the window
(manager down, agent offline, another scan running all window long) is skipped to the next period.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from hostward.manager.audit import service as audit
from hostward.manager.db.engine import is_postgres
from hostward.manager.protection.service import derive_agent_status
from hostward.manager.risk.models import RiskServerState
from hostward.manager.risk.state import state_for
from hostward.manager.scans import schedule
from hostward.manager.scans import service as scans
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.manager.settings_store import service as store
from hostward.manager.vulns import feeds
from hostward.manager.vulns.schemas import ScanSettings

SETTINGS_KEY = "vuln_scan_schedule"
WINDOW_START_HOUR = 0
WINDOW_HOURS = 7
PLAN_BATCH = 500


def get_settings(session: Session) -> ScanSettings:
    raw = store.get(session, SETTINGS_KEY)
    try:
        return ScanSettings.model_validate(raw or {})
    except ValueError:
        return ScanSettings()


def put_settings(session: Session, value: ScanSettings, *, actor: str, now: datetime) -> ScanSettings:
    store.put(session, SETTINGS_KEY, value.model_dump(), now)
    # Everyone's next slot follows the new period.
    for state in session.scalars(
        select(RiskServerState).where(RiskServerState.next_vuln_scan_at.is_not(None))
    ):
        state.next_vuln_scan_at = None
    audit.record(
        session,
        actor,
        "set_vuln_scan_schedule",
        target_type="setting",
        target_id=SETTINGS_KEY,
        **value.model_dump(),
    )
    return value


def next_slot(after: datetime, server: Server, offset_s: int, period_days: int) -> datetime:
    """The first slot in the window at least ``period_days - 1`` days after ``after``."""
    start = after + timedelta(days=max(0, period_days - 1))
    return schedule.next_daily_scan_at(
        start,
        utc_offset_minutes=server.utc_offset_minutes,
        window_start_hour=WINDOW_START_HOUR,
        window_hours=WINDOW_HOURS,
        offset_s=offset_s,
    )


def plan_vuln_scans(session: Session, now: datetime, settings: ManagerSettings) -> dict[str, Any]:
    """Give protected servers their slot and queue the scheduled scans now due."""
    sched = get_settings(session)
    if not sched.enabled or feeds.advisory_count(session) == 0:
        return {"queued": 0, "skipped": "disabled" if not sched.enabled else "no feed"}
    stmt = (
        select(Server)
        .outerjoin(RiskServerState, RiskServerState.server_id == Server.id)
        .where(
            Server.protection_status == "opened",
            or_(
                RiskServerState.server_id.is_(None),
                RiskServerState.next_vuln_scan_at.is_(None),
                RiskServerState.next_vuln_scan_at <= now,
            ),
        )
        .order_by(Server.id)
        .limit(PLAN_BATCH)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update(of=Server, skip_locked=True)
    window = timedelta(hours=WINDOW_HOURS)
    queued = 0
    for server in list(session.scalars(stmt)):
        state = state_for(session, server.id)
        if state.vuln_scan_offset_s < 0:
            state.vuln_scan_offset_s = schedule.random_offset(WINDOW_HOURS)
        due = state.next_vuln_scan_at
        if due is None:
            state.next_vuln_scan_at = next_slot(now, server, state.vuln_scan_offset_s, 1)
            continue
        if now - due >= window:
            state.next_vuln_scan_at = next_slot(now, server, state.vuln_scan_offset_s, sched.period_days)
            continue
        if derive_agent_status(server, now, settings) != "online" or scans.active_scan(session, server.id):
            continue  # try again next minute, while the window lasts
        scans.create_scans(
            session, [server.id], "vulnerability", "schedule", now, settings, scans.SYSTEM_ACTOR
        )
        queued += 1
        state.next_vuln_scan_at = next_slot(now, server, state.vuln_scan_offset_s, sched.period_days)
    return {"queued": queued}
