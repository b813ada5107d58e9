"""Scans: create (manual, on enable, daily), follow the agent's progress, cancel, time out.

A scan is a row plus a ``scan`` command for the agent (payload ``{scan_id, kind}``); the agent reports
``ScanProgressEvent``s through its outbox. The server's ``scan_result`` is derived here: ``scanning``
while a scan is queued or running, else ``risk`` while any finding is open, else ``clean`` once a scan
has succeeded (``undetected`` before that).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid, NotFound
from hostward.manager.alarms.models import Alarm
from hostward.manager.audit import service as audit
from hostward.manager.db.engine import is_postgres
from hostward.manager.malware.policy import scan_paths as custom_scan_paths
from hostward.manager.protection.service import derive_agent_status
from hostward.manager.scans import schedule
from hostward.manager.scans.models import SCAN_KINDS, SCAN_TRIGGERS, Scan
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.wire.protocol import ScanProgressEvent

ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("succeeded", "failed", "timed_out", "cancelled")
SYSTEM_ACTOR = "system"
# Servers planned per run of the daily planner (it runs every minute, so a large fleet catches up).
PLAN_BATCH = 500


def _queue_command(
    session: Session, server_id: str, kind: str, payload: dict[str, Any], now: datetime
) -> None:
    # Imported here: the agent channel imports this module to route scan progress events.
    from hostward.manager.agentlink import service as agentlink

    agentlink.queue_command(session, server_id, kind, payload, now)


def active_scan(session: Session, server_id: str) -> Scan | None:
    """The server's queued or running scan, if any (the oldest when there are several)."""
    stmt = (
        select(Scan)
        .where(Scan.server_id == server_id, Scan.status.in_(ACTIVE_STATUSES))
        .order_by(Scan.created_at)
        .limit(1)
    )
    return session.scalars(stmt).first()


def _check_can_scan(server: Server, now: datetime, settings: ManagerSettings) -> None:
    agent_status = derive_agent_status(server, now, settings)
    if agent_status != "online":
        raise Conflict(
            f"server {server.name}: agent is {agent_status}; a scan needs an online agent",
            code="agent_not_online",
        )
    # With the agent online, a protection exception means a degraded agent (over its resource budget):
    # it still scans, throttled.
    if server.protection_status not in ("opened", "protection_exception"):
        raise Conflict(
            f"server {server.name} is not protected ({server.protection_status}); enable protection first",
            code="server_not_protected",
        )


def create_scans(
    session: Session,
    server_ids: list[str],
    kind: str,
    trigger: str,
    now: datetime,
    settings: ManagerSettings,
    actor: str,
    paths: list[str] | None = None,
) -> list[Scan]:
    """Queue one scan of ``kind`` per server and send each agent a ``scan`` command.

    ``paths`` (1-20 absolute paths) are required by ``malware_custom`` scans and refused for the other
    kinds; the command payload carries them.

    Manual scans are refused (the whole request, naming the server) when the agent is not online, the
    server is not protected, or a scan is already queued or running there. Enable and schedule
    triggers reuse an active scan of the same kind instead of adding a second one.
    """
    if kind not in SCAN_KINDS:
        raise Invalid(f"scan kind must be one of {', '.join(SCAN_KINDS)}", code="invalid_scan_kind")
    if trigger not in SCAN_TRIGGERS:
        raise Invalid(f"scan trigger must be one of {', '.join(SCAN_TRIGGERS)}")
    try:
        scan_paths = custom_scan_paths(kind, paths)
    except ValueError as exc:
        raise Invalid(f"paths: {exc}", code="invalid_scan_paths") from exc
    ids = list(dict.fromkeys(server_ids))
    if not ids:
        raise Invalid("name at least one server to scan")
    created: list[Scan] = []
    for server_id in ids:
        server = session.get(Server, server_id)
        if server is None:
            raise NotFound(f"server {server_id} not found")
        current = active_scan(session, server.id)
        if trigger == "manual":
            _check_can_scan(server, now, settings)
            if current is not None:
                raise Conflict(
                    f"server {server.name}: scan {current.id} is already {current.status}",
                    code="scan_in_progress",
                )
        elif current is not None and current.kind == kind and current.paths == scan_paths:
            created.append(current)
            continue
        scan = Scan(
            server_id=server.id,
            kind=kind,
            trigger=trigger,
            status="queued",
            progress=0,
            detail="",
            created_at=now,
            timeout_at=now + timedelta(minutes=settings.scan_timeout_minutes),
            requested_by=actor,
            paths=scan_paths,
        )
        session.add(scan)
        session.flush()
        payload: dict[str, Any] = {"scan_id": scan.id, "kind": kind}
        if scan_paths is not None:
            payload["paths"] = scan_paths
        _queue_command(session, server.id, "scan", payload, now)
        server.scan_result = "scanning"
        if trigger != "schedule":
            # Daily scans are routine; recording them would bury the operators' own actions.
            audit.record(
                session,
                actor,
                "start_scan",
                target_type="server",
                target_id=server.id,
                target_name=server.name,
                scan_id=scan.id,
                kind=kind,
                trigger=trigger,
                paths=scan_paths,
            )
        created.append(scan)
    return created


def get_scan(session: Session, scan_id: str) -> Scan:
    scan = session.get(Scan, scan_id)
    if scan is None:
        raise NotFound(f"scan {scan_id} not found")
    return scan


def list_scans(
    session: Session,
    *,
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    kind: str | None = None,
    trigger: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Scan, str]], int]:
    """Scans newest first with their server's name, and the total matching the filters."""
    stmt = select(Scan, Server.name).join(Server, Server.id == Scan.server_id)
    if server_id:
        stmt = stmt.where(Scan.server_id == server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    if status:
        stmt = stmt.where(Scan.status == status)
    if kind:
        stmt = stmt.where(Scan.kind == kind)
    if trigger:
        stmt = stmt.where(Scan.trigger == trigger)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Scan.created_at.desc(), Scan.id.desc()).offset(offset).limit(limit))
    return [(scan, name) for scan, name in rows], total


def _has_open_findings(session: Session, server: Server) -> bool:
    risk = server.risk_vulnerabilities + server.risk_baseline + server.risk_intrusions + server.risk_assets
    if risk > 0:
        return True
    unhandled = session.scalar(
        select(Alarm.id).where(Alarm.server_id == server.id, Alarm.status == "unhandled").limit(1)
    )
    return unhandled is not None


def recompute_scan_result(session: Session, server: Server) -> str:
    """Derive ``server.scan_result`` from its scans and open findings; returns the new value."""
    if active_scan(session, server.id) is not None:
        result = "scanning"
    elif _has_open_findings(session, server):
        result = "risk"
    else:
        succeeded = session.scalar(
            select(Scan.id).where(Scan.server_id == server.id, Scan.status == "succeeded").limit(1)
        )
        result = "clean" if succeeded is not None else "undetected"
    server.scan_result = result
    return result


def on_progress(session: Session, server: Server, event: ScanProgressEvent, now: datetime) -> Scan:
    """Apply an agent's progress report; NotFound (event rejected) for a scan of another server.

    A report for a scan that already ended (timed out, cancelled, or a resend) changes nothing.
    """
    scan = session.get(Scan, event.scan_id)
    if scan is None or scan.server_id != server.id:
        raise NotFound(f"scan {event.scan_id} not found for this server", code="scan_not_found")
    if scan.status in FINISHED_STATUSES:
        return scan
    if scan.started_at is None:
        scan.started_at = now
    if event.detail:
        scan.detail = event.detail
    if event.status == "running":
        scan.status = "running"
        # A finished scan is the only one at 100 %; reports never move progress backwards.
        scan.progress = min(99, max(scan.progress, event.progress))
    else:
        scan.status = event.status
        scan.finished_at = now
        if event.status == "succeeded":
            scan.progress = 100
        else:
            scan.progress = max(scan.progress, min(event.progress, 99))
    session.flush()
    recompute_scan_result(session, server)
    return scan


def cancel_scan(session: Session, scan_id: str, now: datetime, actor: str) -> Scan:
    """Cancel a queued or running scan at once and tell the agent to stop it."""
    scan = get_scan(session, scan_id)
    if scan.status not in ACTIVE_STATUSES:
        raise Conflict(f"scan {scan.id} is {scan.status}, not queued or running", code="scan_not_active")
    server = session.get(Server, scan.server_id)
    assert server is not None  # scans are deleted with their server
    scan.status = "cancelled"
    scan.finished_at = now
    scan.detail = f"cancelled by {actor}"
    session.flush()
    _queue_command(session, server.id, "cancel_scan", {"scan_id": scan.id}, now)
    recompute_scan_result(session, server)
    audit.record(
        session,
        actor,
        "cancel_scan",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        scan_id=scan.id,
        kind=scan.kind,
    )
    return scan


def expire_scans(session: Session, now: datetime) -> int:
    """Queued or running scans past ``timeout_at`` become ``timed_out``; returns how many."""
    overdue = list(
        session.scalars(select(Scan).where(Scan.status.in_(ACTIVE_STATUSES), Scan.timeout_at <= now))
    )
    server_ids: set[str] = set()
    for scan in overdue:
        minutes = max(1, round((scan.timeout_at - scan.created_at).total_seconds() / 60))
        scan.status = "timed_out"
        scan.finished_at = now
        scan.detail = f"no result from the agent within {minutes} minutes"
        server_ids.add(scan.server_id)
    session.flush()
    for server_id in sorted(server_ids):
        server = session.get(Server, server_id)
        if server is not None:
            recompute_scan_result(session, server)
    return len(overdue)


def plan_daily_scans(session: Session, now: datetime, settings: ManagerSettings) -> int:
    """Give every protected server its slot in the daily window and queue the full scans now due.

    A server seen for the first time gets a random offset into the window and its next slot (no scan
    yet). At its slot a server is scanned when its agent is online and no scan is active; a slot
    missed by more than the window's length (manager down) is skipped. Returns the scans queued.
    """
    # Unprotected servers forget their slot; turning protection on again plans a fresh one.
    session.execute(
        update(Server)
        .where(Server.protection_status == "closed", Server.next_daily_scan_at.is_not(None))
        .values(next_daily_scan_at=None)
        .execution_options(synchronize_session=False)
    )
    window = timedelta(seconds=schedule.window_seconds(settings.scan_window_hours))
    stmt = (
        select(Server)
        .where(
            Server.protection_status.in_(("opened", "protection_exception")),
            or_(Server.next_daily_scan_at.is_(None), Server.next_daily_scan_at <= now),
        )
        .order_by(Server.id)
        .limit(PLAN_BATCH)
    )
    if is_postgres(session):
        # Two planners (a run outlasting its interval) never plan the same server twice.
        stmt = stmt.with_for_update(skip_locked=True)
    queued = 0
    for server in list(session.scalars(stmt)):
        due = server.next_daily_scan_at
        if due is None:
            if server.daily_scan_offset_s == 0:
                server.daily_scan_offset_s = schedule.random_offset(settings.scan_window_hours)
        elif (
            now - due < window
            and server.protection_status == "opened"
            and derive_agent_status(server, now, settings) == "online"
            and active_scan(session, server.id) is None
        ):
            create_scans(session, [server.id], "full", "schedule", now, settings, SYSTEM_ACTOR)
            queued += 1
        server.next_daily_scan_at = schedule.next_daily_scan_at(
            now,
            utc_offset_minutes=server.utc_offset_minutes,
            window_start_hour=settings.scan_window_start_hour,
            window_hours=settings.scan_window_hours,
            offset_s=server.daily_scan_offset_s,
        )
    return queued
