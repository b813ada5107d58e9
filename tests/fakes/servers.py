"""Hand-written helpers that put servers into the database as if their agent had enrolled."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.core.ids import new_id
from hostward.manager.regions import service as regions
from hostward.manager.servers.models import Server


def enrolled_server(
    session: Session,
    now: datetime,
    *,
    name: str | None = None,
    region: str | None = None,
    online: bool = True,
) -> Server:
    """A server whose agent enrolled and (if ``online``) just sent a heartbeat."""
    sid = new_id()
    server = Server(
        id=sid,
        name=name or f"srv-{sid[:8]}",
        identity=sid.replace("-", "") + "0" * 32,
        machine_id=sid,
        hostname=name or "host",
        region=regions.ensure(session, region),
        enrolled_at=now,
        last_seen_at=now if online else None,
        agent_status="online" if online else "offline",
    )
    session.add(server)
    session.flush()
    return server
