"""Web tamper protection: per-server configuration, enable/disable, status and tamper events.

The configuration lives per server (``WtpServer``), not in a policy group; the agent receives it in
``bundle.global_settings["wtp"]`` (``agent_section``). Enabling WTP binds a ``wtp`` quota (the edition
includes premium) through the protection service; disabling unbinds it, unlocks everything on the agent
and keeps the configuration. After every change the server's bundle version is recomputed and an online
agent is asked to fetch it at once (``apply_policy``), so a change is in force within seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.manager.agentlink import service as agentlink
from hostward.manager.audit import service as audit
from hostward.manager.policies import service as policies
from hostward.manager.protection import service as protection
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings
from hostward.manager.wtp.models import WtpEvent, WtpServer
from hostward.manager.wtp.schemas import StatusData, TamperData, WtpConfigIn, default_config
from hostward.wire import RecordEvent

STATUS_TOPIC = "wtp_status"
TAMPER_TOPIC = "wtp_tamper"
REMOTE_RESTORE_COMMAND = "wtp_remote_restore"
ALARM_CLASS = "wtp_0001"
EVENT_RETENTION_DAYS = 180
_PUSH_TTL = timedelta(minutes=2)
_CONTROL = re.compile(r"[\x00]")


@dataclass
class Outcome:
    server_id: str
    ok: bool
    quota_id: str | None = None
    error: HostwardError | None = None


def _text(value: str) -> str:
    """Storable on both databases (PostgreSQL text takes neither NUL nor lone surrogates)."""
    return _CONTROL.sub("\\\\x00", value).encode("utf-8", "backslashreplace").decode("utf-8")


def get_server(session: Session, server_id: str) -> Server:
    # PostgreSQL refuses NUL in text parameters: such an id names no server.
    server = session.get(Server, server_id) if "\0" not in server_id else None
    if server is None:
        raise NotFound(f"server {server_id} not found")
    return server


def _row(session: Session, server: Server, *, create: bool = False) -> WtpServer | None:
    row = session.get(WtpServer, server.id)
    if row is None and create:
        row = WtpServer(server_id=server.id, enabled=False, config=default_config(), status={})
        session.add(row)
        session.flush()
    return row


def push(session: Session, server: Server, now: datetime) -> None:
    """New bundle version; an online agent is asked to fetch it now rather than at its next heartbeat."""
    before = server.policy_version
    policies.refresh_server_policy(session, server)
    if server.policy_version != before and server.agent_status == "online":
        agentlink.queue_command(session, server.id, "apply_policy", {}, now, ttl=_PUSH_TTL)


def is_active(server: Server, row: WtpServer | None) -> bool:
    return row is not None and row.enabled and server.edition == "wtp"


def agent_section(session: Session, server: Server) -> dict[str, Any]:
    """``bundle.global_settings["wtp"]``: the configuration with ``enabled`` (false = unlock all)."""
    row = session.get(WtpServer, server.id)
    config = dict(row.config) if row is not None and row.config else default_config()
    protected = server.edition is not None and server.protection_status != "closed"
    return {**config, "enabled": is_active(server, row) and protected}


# ---- configuration -----------------------------------------------------------------------------------


def config_of(session: Session, server_id: str) -> tuple[Server, WtpConfigIn, bool]:
    server = get_server(session, server_id)
    row = _row(session, server)
    if row is None or not row.config:
        return server, WtpConfigIn(), False
    return server, WtpConfigIn.model_validate(row.config), is_active(server, row)


def set_config(
    session: Session, server_id: str, config: WtpConfigIn, *, actor: str, now: datetime
) -> WtpServer:
    server = get_server(session, server_id)
    row = _row(session, server, create=True)
    assert row is not None
    old = WtpConfigIn.model_validate(row.config) if row.config else WtpConfigIn()
    row.config = config.model_dump()
    row.updated_at = now
    push(session, server, now)
    audit.record(
        session,
        actor,
        "wtp_config",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        dirs=[d.path for d in config.dirs][:20],
        dir_count=len(config.dirs),
        added=sorted({d.path for d in config.dirs} - {d.path for d in old.dirs})[:20],
        removed=sorted({d.path for d in old.dirs} - {d.path for d in config.dirs})[:20],
        privileged=config.privileged,
        schedule=config.schedule.enabled,
        remote_backup=config.remote_backup,
    )
    return row


def set_suspended(
    session: Session, server_id: str, path: str, suspended: bool, *, actor: str, now: datetime
) -> WtpServer:
    """Suspend or resume protection of one configured directory."""
    server, config, _active = config_of(session, server_id)
    match = [d for d in config.dirs if d.path == path]
    if not match:
        raise NotFound(f"path: {path} is not a protected directory of server {server.name}")
    if match[0].suspended == suspended:
        raise Conflict(f"{path} is already {'suspended' if suspended else 'protected'}")
    match[0].suspended = suspended
    row = _row(session, server, create=True)
    assert row is not None
    row.config = config.model_dump()
    row.updated_at = now
    push(session, server, now)
    audit.record(
        session,
        actor,
        "wtp_suspend_dir" if suspended else "wtp_resume_dir",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        path=path,
    )
    return row


# ---- enable / disable --------------------------------------------------------------------------------


def enable_one(
    session: Session,
    server_id: str,
    now: datetime,
    settings: ManagerSettings,
    *,
    actor: str,
    quota_id: str | None = None,
) -> str:
    """Bind a wtp quota and switch WTP on (with premium's policies); returns the quota id."""
    server = get_server(session, server_id)
    row = _row(session, server)
    if server.edition == "wtp" and row is not None and row.enabled:
        raise Conflict(f"server {server.name}: web tamper protection is already enabled")
    if server.edition is not None and server.edition != "wtp":
        raise Conflict(
            f"server {server.name} runs the {server.edition} edition; disable it first, then enable WTP"
        )
    qid = ""
    if server.edition is None:
        qid = protection.enable_one(
            session, server.id, "wtp", now, settings, actor=actor, quota_id=quota_id, from_wtp_page=True
        )
    else:
        bound = protection.bound_quota(session, server.id)
        qid = bound.id if bound is not None else ""
    row = _row(session, server, create=True)
    assert row is not None
    row.enabled = True
    row.enabled_at = now
    row.updated_at = now
    push(session, server, now)
    audit.record(
        session,
        actor,
        "wtp_enable",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        quota_id=qid,
        dirs=len(row.config.get("dirs", [])),
    )
    return qid


def disable_one(
    session: Session, server_id: str, now: datetime, settings: ManagerSettings, *, actor: str
) -> None:
    """Switch WTP off: the agent unlocks everything, the quota is freed, the configuration stays."""
    server = get_server(session, server_id)
    row = _row(session, server)
    if server.edition != "wtp" and (row is None or not row.enabled):
        raise Conflict(f"server {server.name}: web tamper protection is not enabled")
    if row is not None:
        row.enabled = False
        row.updated_at = now
    if server.edition == "wtp":
        protection.disable_one(session, server.id, now, settings, actor=actor)
    push(session, server, now)
    audit.record(
        session, actor, "wtp_disable", target_type="server", target_id=server.id, target_name=server.name
    )


def batch(session: Session, server_ids: list[str], fn: Any, *args: Any, **kwargs: Any) -> list[Outcome]:
    """One savepoint per server: one refusal does not undo the others."""
    outcomes = []
    for sid in dict.fromkeys(server_ids):
        try:
            with session.begin_nested():
                result = fn(session, sid, *args, **kwargs)
            outcomes.append(
                Outcome(sid, True, quota_id=result if isinstance(result, str) and result else None)
            )
        except HostwardError as exc:
            outcomes.append(Outcome(sid, False, error=exc))
    return outcomes


# ---- records -----------------------------------------------------------------------------------------


def _invalid(topic: str, exc: ValidationError) -> Invalid:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "data"
    return Invalid(f"{topic} record: {loc}: {err['msg']}")


def record_status(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    try:
        data = StatusData.model_validate(event.data)
    except ValidationError as exc:
        raise _invalid(STATUS_TOPIC, exc) from exc
    row = _row(session, server, create=True)
    assert row is not None
    if row.status_at is not None and event.occurred_at < row.status_at:
        return  # an older status arriving late does not overwrite a newer one
    status = data.model_dump(mode="json")
    status["message"] = _text(data.message)
    status["dirs"] = [{**d, "path": _text(d["path"])} for d in status["dirs"]]
    row.status = status
    row.status_at = min(event.occurred_at, now)


def record_tamper(session: Session, server: Server, event: RecordEvent, now: datetime) -> WtpEvent:
    try:
        data = TamperData.model_validate(event.data)
    except ValidationError as exc:
        raise _invalid(TAMPER_TOPIC, exc) from exc
    process = data.process
    row = WtpEvent(
        server_id=server.id,
        path=_text(data.path),
        action=_text(data.action),
        outcome=_text(data.outcome),
        directory=_text(data.directory),
        moved_to=_text(data.moved_to) if data.moved_to else None,
        latency_ms=round(data.latency_ms) if data.latency_ms is not None else None,
        process_pid=process.pid if process else None,
        process_exe=_text(process.exe) if process else "",
        process_user=_text(process.user) if process else "",
        process_cmdline=_text(process.cmdline) if process else "",
        occurred_at=min(event.occurred_at, now),
        received_at=now,
    )
    session.add(row)
    return row


# ---- lists -------------------------------------------------------------------------------------------


@dataclass
class ServerRow:
    server: Server
    row: WtpServer | None
    tamper_count: int
    last_tamper_at: datetime | None

    @property
    def enabled(self) -> bool:
        return is_active(self.server, self.row)

    @property
    def config(self) -> dict[str, Any]:
        return self.row.config if self.row is not None and self.row.config else default_config()

    @property
    def status(self) -> dict[str, Any]:
        return self.row.status if self.row is not None else {}

    @property
    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        return str(self.status.get("state") or "pending")


def list_servers(
    session: Session,
    *,
    region: str | None = None,
    q: str | None = None,
    server_id: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[ServerRow], int]:
    """Servers with WTP enabled or configured (or tamper events), by name."""
    counts = (
        select(
            WtpEvent.server_id.label("server_id"),
            func.count().label("n"),
            func.max(WtpEvent.occurred_at).label("last"),
        )
        .group_by(WtpEvent.server_id)
        .subquery()
    )
    stmt = (
        select(Server, WtpServer, counts.c.n, counts.c.last)
        .outerjoin(WtpServer, WtpServer.server_id == Server.id)
        .outerjoin(counts, counts.c.server_id == Server.id)
        .where(or_(Server.edition == "wtp", WtpServer.server_id.is_not(None), counts.c.n > 0))
    )
    region, q, server_id = _param(region), _param(q), _param(server_id)
    if region:
        stmt = stmt.where(Server.region == region)
    if server_id:
        stmt = stmt.where(Server.id == server_id)
    if q:
        stmt = stmt.where(Server.name.ilike(f"%{q.strip()}%"))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Server.name, Server.id).offset(offset).limit(limit)).all()
    return [ServerRow(r[0], r[1], int(r[2] or 0), r[3]) for r in rows], total


def server_row(session: Session, server_id: str) -> ServerRow:
    rows, _ = list_servers(session, server_id=server_id, limit=1)
    if rows:
        return rows[0]
    return ServerRow(get_server(session, server_id), None, 0, None)


def _param(value: str | None) -> str | None:
    """A filter value usable on both databases (PostgreSQL refuses NUL in text parameters)."""
    return value.replace("\0", "") if value is not None else None


def _event_conditions(
    server_id: str | None, q: str | None, since: datetime | None
) -> list[ColumnElement[bool]]:
    server_id, q = _param(server_id), _param(q)
    conditions: list[ColumnElement[bool]] = []
    if server_id:
        conditions.append(WtpEvent.server_id == server_id)
    if q:
        term = f"%{q.strip()}%"
        conditions.append(or_(WtpEvent.path.ilike(term), WtpEvent.process_exe.ilike(term)))
    if since is not None:
        conditions.append(WtpEvent.occurred_at >= since)
    return conditions


def list_events(
    session: Session,
    *,
    server_id: str | None = None,
    q: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[WtpEvent, str]], int]:
    """Tamper events, newest first, with their server's name (``q`` searches path and process)."""
    stmt = (
        select(WtpEvent, Server.name)
        .join(Server, Server.id == WtpEvent.server_id)
        .where(*_event_conditions(server_id, q, since))
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(
        stmt.order_by(WtpEvent.occurred_at.desc(), WtpEvent.id).offset(offset).limit(limit)
    ).all()
    return [(e, n) for e, n in rows], total


def statistics(session: Session, now: datetime) -> dict[str, Any]:
    rows = session.execute(select(Server, WtpServer).join(WtpServer, WtpServer.server_id == Server.id)).all()
    protected = sum(1 for s, r in rows if is_active(s, r))
    count, servers, last = session.execute(
        select(func.count(), func.count(func.distinct(WtpEvent.server_id)), func.max(WtpEvent.occurred_at))
    ).one()
    recent = session.scalar(
        select(func.count()).select_from(WtpEvent).where(WtpEvent.occurred_at >= now - timedelta(hours=24))
    )
    return {
        "servers_protected": protected,
        "servers_configured": len(rows),
        "tamper_events": int(count or 0),
        "tamper_events_24h": int(recent or 0),
        "servers_tampered": int(servers or 0),
        "last_tamper_at": last,
    }


def purge_old(session: Session, now: datetime, days: int = EVENT_RETENTION_DAYS) -> int:
    """Delete tamper events older than ``days``."""
    result = session.execute(delete(WtpEvent).where(WtpEvent.occurred_at < now - timedelta(days=days)))
    return int(getattr(result, "rowcount", 0) or 0)


# ---- remote restore ----------------------------------------------------------------------------------


def queue_remote_restore(
    session: Session, server_id: str, path: str, known: bool, *, actor: str, now: datetime
) -> str:
    """Queue ``wtp_remote_restore {path}``; ``known`` = the manager's copy of the manifest has the path."""
    server = get_server(session, server_id)
    row = _row(session, server)
    if row is None or not row.config.get("remote_backup"):
        raise Conflict(f"server {server.name}: remote backup is not enabled in its WTP configuration")
    if server.enrolled_at is None:
        raise Conflict(f"server {server.name} has no agent")
    if not known:
        raise NotFound(f"path: {path} is not in the manager's backup of server {server.name}")
    command = agentlink.queue_command(session, server.id, REMOTE_RESTORE_COMMAND, {"path": path}, now)
    audit.record(
        session,
        actor,
        "wtp_remote_restore",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        path=path,
        command_id=command.id,
    )
    return command.id
