"""Agent record topics of login security; importing this module registers their handlers.

``blocked_ip`` (the agent's block ledger as it changes)::

    {"action": "blocked" | "unblocked" | "expired", "network": "203.0.113.7/32", "service": "sshd",
     "address": "203.0.113.7", "until": ISO | null, "reason": "...", "attempts": 5, "users": [...],
     "blocked_ip_id": "<manager row id, on the confirmation of a manager unblock>", "by": "manual" | ...}

``login`` (one successful login)::

    {"user": "alice", "address": "198.51.100.4", "service": "sshd", "method": "publickey",
     "login_time": ISO}
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hostward.core.clock import as_utc
from hostward.manager.agentlink.ingest import EventRejected, register
from hostward.manager.agentlink.recordfields import text_field, time_field
from hostward.manager.loginsec.abnormal import evaluate_login
from hostward.manager.loginsec.models import BlockedIp
from hostward.manager.loginsec.netlist import display
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent

ACTIONS = ("blocked", "unblocked", "expired")


@register("blocked_ip")
def on_blocked_ip(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    data = event.data
    action = text_field(data, "action", 16, required=True)
    if action not in ACTIONS:
        raise EventRejected(f"action must be one of {', '.join(ACTIONS)}")
    try:
        source = display(text_field(data, "network", 64, required=True))
    except ValueError as exc:
        raise EventRejected(f"network: {exc}") from exc
    service = text_field(data, "service", 32) or "sshd"
    at = min(as_utc(event.occurred_at), now)
    if action == "blocked":
        _blocked(session, server, data, source, service, at)
    else:
        _unblocked(session, server, data, source, action, at)


def _blocked(
    session: Session, server: Server, data: dict[str, Any], source: str, service: str, at: datetime
) -> None:
    row = session.scalars(
        select(BlockedIp).where(
            BlockedIp.server_id == server.id, BlockedIp.source == source, BlockedIp.service == service
        )
    ).first()
    users = [str(u)[:64] for u in (data.get("users") or [])[:10]]
    attempts = data.get("attempts")
    if row is None:
        row = BlockedIp(
            server_id=server.id,
            source=source,
            network=text_field(data, "network", 64),
            service=service,
            times_blocked=0,
            first_blocked_at=at,
            latest_blocked_at=at,
        )
        session.add(row)
    elif at < row.latest_blocked_at:
        return  # an older block reported late: the row already shows a newer one
    row.times_blocked += 1
    row.status = "blocked"
    row.latest_blocked_at = at
    row.expires_at = time_field(data, "until")
    row.reason = text_field(data, "reason", 255)
    row.attempts = int(attempts) if isinstance(attempts, int) and attempts >= 0 else 0
    row.users = users
    row.unblocked_at = None
    row.unblock_reason = ""
    row.unblocked_by = None
    row.unblock_command_id = None
    row.updated_at = at
    session.flush()


def _unblocked(
    session: Session, server: Server, data: dict[str, Any], source: str, action: str, at: datetime
) -> None:
    wanted_id = text_field(data, "blocked_ip_id", 36)
    stmt = select(BlockedIp).where(BlockedIp.server_id == server.id, BlockedIp.status != "unblocked")
    stmt = stmt.where(BlockedIp.id == wanted_id if wanted_id else BlockedIp.source == source)
    for row in session.scalars(stmt).all():
        if at < row.latest_blocked_at:
            continue  # the source was blocked again after this unblock
        row.status = "unblocked"
        row.unblocked_at = at
        row.unblock_reason = "expired" if action == "expired" else (text_field(data, "by", 32) or "manual")
        row.updated_at = at


@register("login")
def on_login(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    data = event.data
    address = text_field(data, "address", 64, required=True)
    evaluate_login(
        session,
        server,
        address=address,
        user=text_field(data, "user", 64) or None,
        service=text_field(data, "service", 32) or "sshd",
        method=text_field(data, "method", 32) or None,
        login_time=min(time_field(data, "login_time") or as_utc(event.occurred_at), now),
        key=event.key,
        now=now,
    )
