"""The records login security sends to the manager: blocks and successful logins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hostward.agent.detectors.bruteforce import BlockDecision
from hostward.agent.detectors.logevents import LoginRow, as_event
from hostward.core.ids import new_id
from hostward.wire import RecordEvent


def block_data(b: BlockDecision, network: str) -> dict[str, Any]:
    """The data of a ``blocked_ip`` record for a block now in force."""
    return {
        "action": "blocked",
        "network": network,
        "address": b.address,
        "service": b.service,
        "until": b.until.isoformat(),
        "reason": b.reason,
        "attempts": b.attempts,
        "users": list(b.users),
        "times_blocked": b.times_blocked,
    }


def record(topic: str, now: float, data: dict[str, Any]) -> RecordEvent:
    """A record for the manager, keyed uniquely, stamped ``now``."""
    return RecordEvent(key=new_id(), occurred_at=datetime.fromtimestamp(now, UTC), topic=topic, data=data)


def login_record(row: LoginRow, now: float) -> RecordEvent:
    """The ``login`` record of a successful login (the manager's abnormal-login rule reads it)."""
    event = as_event(row)
    when = event.when or datetime.fromtimestamp(now, UTC)
    data = {
        "user": event.user or "",
        "address": event.address,
        "service": event.service,
        "method": event.method or "",
        "login_time": when.isoformat(),
    }
    return record("login", now, data)
