"""Web tamper protection and ransomware prevention as one block of the server detail page."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from hostward.manager.ransomware import service as ransomware
from hostward.manager.wtp import service as wtp

DIR_STATES = {
    "protected": "locked (immutable) and watched",
    "watch_only": "watch-and-restore only: the filesystem has no immutable attribute",
    "suspended": "suspended",
    "unprotected_window": "open for a scheduled update window",
    "disabled": "disabled",
    "error": "error",
}


def server_summary(session: Session, server_id: str) -> dict[str, Any] | None:
    """``{"wtp": {...} | None, "ransomware": {...} | None}``, or None when neither applies to the server."""
    w = wtp.server_row(session, server_id)
    out: dict[str, Any] = {"wtp": None, "ransomware": None}
    if w.enabled or w.row is not None or w.tamper_count:
        status = w.status if w.enabled else {}
        out["wtp"] = {
            "state": w.state,
            "message": str(status.get("message") or ""),
            "dirs": [
                {**d, "meaning": DIR_STATES.get(str(d.get("state")), str(d.get("state")))}
                for d in status.get("dirs") or []
                if isinstance(d, dict)
            ],
            "backup": status.get("backup") or {},
            "tamper_count": w.tamper_count,
            "last_tamper_at": w.last_tamper_at,
        }
    rows, _ = ransomware.list_servers(session, server_id=server_id, limit=1)
    r = rows[0] if rows else None
    if r is not None and (r.enabled or r.row is not None):
        status = r.row.status if r.row is not None and r.enabled else {}
        out["ransomware"] = {
            "state": r.state,
            "message": str(status.get("message") or ""),
            "baits": status.get("baits"),
            "policy": r.policy.name if r.policy is not None else None,
            "snapshots": r.snapshots,
            "last_snapshot_at": r.last_snapshot_at,
        }
    return out if out["wtp"] or out["ransomware"] else None
