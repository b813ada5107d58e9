"""Real-time notifications, queued in the same transaction that stores the event.

``install(sessions)`` (called by the app factories) adds two session hooks: before each flush, new
unhandled alarms and new or repeated automatic blocks are noted; before the commit, the ones that were
really stored (not undone by a rolled-back SAVEPOINT of the ingest) become ``notify_send`` jobs for the
enabled channels, filtered by the chosen severities and masked alarm classes. The notice is therefore
sent exactly when the event is committed, never for an event that was not, and once per event (job
dedup keys). A repeat merged into an open alarm is not a new alarm and sends nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

from hostward.manager.alarms.models import Alarm
from hostward.manager.loginsec.models import BlockedIp
from hostward.manager.notify.service import alarm_message, blocking_message, enqueue
from hostward.manager.notify.settings import load
from hostward.manager.servers.models import Server

log = logging.getLogger("hostward.manager.notify")

_PENDING = "notify_pending"
_MARK = "_hostward_realtime_notifications"


def install(sessions: sessionmaker[Session]) -> None:
    """Add the hooks to a session factory (idempotent)."""
    if getattr(sessions, _MARK, False):
        return
    event.listen(sessions, "before_flush", _collect)
    event.listen(sessions, "before_commit", _dispatch)
    setattr(sessions, _MARK, True)


def _collect(session: Session, _context: Any, _instances: Any) -> None:
    pending: list[tuple[str, Any]] = session.info.setdefault(_PENDING, [])
    for obj in session.new:
        if isinstance(obj, Alarm) and obj.status != "handled":
            pending.append(("alarm", obj))
        elif isinstance(obj, BlockedIp) and obj.status in (None, "blocked"):
            pending.append(("block", obj))
    for obj in session.dirty:
        if (
            isinstance(obj, BlockedIp)
            and obj.status == "blocked"
            and inspect(obj).attrs.times_blocked.history.has_changes()
        ):
            pending.append(("block", obj))


def _dispatch(session: Session) -> None:
    # Commit flushes after this hook: flush first so what is still pending is noted too.
    session.flush()
    pending: list[tuple[str, Any]] = session.info.pop(_PENDING, [])
    stored = [(kind, obj) for kind, obj in pending if inspect(obj).persistent]
    if not stored:
        return
    settings = load(session)
    if not settings.realtime_enabled or not settings.channels:
        return
    seen: set[tuple[str, str, int]] = set()
    for kind, obj in stored:
        marker = (kind, obj.id, getattr(obj, "times_blocked", 0))
        if marker in seen:
            continue
        seen.add(marker)
        server = session.get(Server, obj.server_id)
        if kind == "alarm":
            if obj.status == "unhandled" and settings.wants_alarm(obj.event_class, obj.severity):
                enqueue(session, settings, alarm_message(obj, server), f"rt:alarm:{obj.id}")
        elif settings.auto_blocking and obj.status == "blocked":
            enqueue(
                session, settings, blocking_message(obj, server), f"rt:block:{obj.id}:{obj.times_blocked}"
            )
    session.info.pop(_PENDING, None)
