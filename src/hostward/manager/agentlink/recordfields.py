"""Reading the fields of an agent record's data: what does not fit rejects the record (``EventRejected``,
which the ingest path answers as ``rejected`` with the reason) instead of storing a wrong value."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hostward.core.clock import as_utc
from hostward.manager.agentlink.ingest import EventRejected


def text_field(data: dict[str, Any], key: str, limit: int, *, required: bool = False) -> str:
    """``data[key]`` cut to ``limit`` characters; "" when absent or empty (rejected when ``required``),
    rejected when not text."""
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise EventRejected(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise EventRejected(f"{key} must be text")
    return value[:limit]


def time_field(data: dict[str, Any], key: str) -> datetime | None:
    """``data[key]`` as an aware UTC date-time; None when absent or empty, rejected when not ISO 8601."""
    value = data.get(key)
    if value in (None, ""):
        return None
    try:
        return as_utc(datetime.fromisoformat(str(value)))
    except ValueError as exc:
        raise EventRejected(f"{key}: not an ISO date-time") from exc
