"""Alarm export (API ``GET /alarms/export`` and the console's download link): the filtered alarm list."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.manager.alarms import service
from hostward.manager.risk.export import Column, check_format, collect, export_response

MAX_EXPORT = 30_000
COLUMNS: list[Column] = [
    ("Alarm ID", "id"),
    ("Server", "server_name"),
    ("Severity", "severity"),
    ("Event class", "event_class"),
    ("Event type", "event_type"),
    ("Name", "name"),
    ("Category", "category"),
    ("Attack phase", "attack_phase"),
    ("Title", "title"),
    ("Status", "status"),
    ("Handling", "handle_action"),
    ("Handled by", "handler"),
    ("Remark", "handle_remark"),
    ("Count", "count"),
    ("First seen", "first_seen"),
    ("Last seen", "last_seen"),
    ("Evidence", "evidence"),
]
_FIELDS = [key for _, key in COLUMNS if isinstance(key, str) and key != "server_name"] + ["server_id"]


def export(session: Session, *, fmt: str | None, now: datetime, **filters: Any) -> Response:
    """The alarms ``filters`` select (as ``alarms.service.list_alarms``), CSV or JSON, newest first."""
    fmt = check_format(fmt)
    pairs = collect(lambda o, n: service.list_alarms(session, **filters, offset=o, limit=n), MAX_EXPORT)
    rows = []
    for alarm, name in pairs:
        row = {f: getattr(alarm, f) for f in _FIELDS}
        row["server_name"] = name
        rows.append(row)
    return export_response(rows, COLUMNS, fmt, "alarms", now)
