"""Servers: listing with server-side filters, edits, deletion, server groups and asset fingerprints."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, delete, func, or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid, NotFound
from hostward.manager.audit import service as audit
from hostward.manager.quotas.models import Quota
from hostward.manager.regions import service as regions
from hostward.manager.servers.models import (
    AGENT_STATUSES,
    ASSET_IMPORTANCE,
    PROTECTION_STATUSES,
    SCAN_RESULTS,
    AssetSnapshotRow,
    Server,
    ServerGroup,
)
from hostward.wire import AssetsEvent

SORTS = {
    "name": Server.name,
    "-name": Server.name.desc(),
    "created": Server.created_at,
    "-created": Server.created_at.desc(),
    "last_seen": Server.last_seen_at,
    "-last_seen": Server.last_seen_at.desc(),
    "-risk": (Server.risk_intrusions + Server.risk_vulnerabilities + Server.risk_baseline).desc(),
}
ASSET_CATEGORIES = ("accounts", "ports", "processes", "packages", "autostart", "kernel_modules")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_\-.*+]{1,64}$")
MAX_LABELS = 20


def _filtered(
    *,
    region: str | None,
    edition: str | None,
    agent_status: str | None,
    protection_status: str | None,
    scan_result: str | None,
    server_group_id: str | None,
    asset_importance: str | None,
    label: str | None,
    q: str | None,
) -> Select[Any]:
    stmt = select(Server)
    if region:
        stmt = stmt.where(Server.region == region)
    if edition:
        stmt = stmt.where(Server.edition.is_(None) if edition == "none" else Server.edition == edition)
    for value, allowed, column, name in (
        (agent_status, (*AGENT_STATUSES, "not_online"), Server.agent_status, "agent_status"),
        (protection_status, PROTECTION_STATUSES, Server.protection_status, "protection_status"),
        (scan_result, SCAN_RESULTS, Server.scan_result, "scan_result"),
        (asset_importance, ASSET_IMPORTANCE, Server.asset_importance, "asset_importance"),
    ):
        if not value:
            continue
        if value not in allowed:
            raise Invalid(f"{name} must be one of {', '.join(allowed)}")
        stmt = stmt.where(column != "online") if value == "not_online" else stmt.where(column == value)
    if server_group_id:
        stmt = stmt.where(Server.server_group_id == server_group_id)
    if label:
        stmt = stmt.where(cast(Server.labels, String).contains(f'"{label}"'))
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(
            or_(
                Server.name.ilike(like),
                Server.hostname.ilike(like),
                cast(Server.ips, String).ilike(like),
                Server.id == q.strip(),
            )
        )
    return stmt


def list_servers(
    session: Session,
    *,
    region: str | None = None,
    edition: str | None = None,
    agent_status: str | None = None,
    protection_status: str | None = None,
    scan_result: str | None = None,
    server_group_id: str | None = None,
    asset_importance: str | None = None,
    label: str | None = None,
    q: str | None = None,
    sort: str = "name",
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[Server], int]:
    if sort not in SORTS:
        raise Invalid(f"sort must be one of {', '.join(SORTS)}")
    stmt = _filtered(
        region=region,
        edition=edition,
        agent_status=agent_status,
        protection_status=protection_status,
        scan_result=scan_result,
        server_group_id=server_group_id,
        asset_importance=asset_importance,
        label=label,
        q=q,
    )
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(SORTS[sort], Server.id).offset(offset).limit(limit)).all()
    return [r for r in rows], total


def quota_ids(session: Session, server_ids: list[str]) -> dict[str, str]:
    if not server_ids:
        return {}
    rows = session.execute(select(Quota.server_id, Quota.id).where(Quota.server_id.in_(server_ids)))
    return {str(sid): str(qid) for sid, qid in rows}


def get_server(session: Session, server_id: str) -> Server:
    server = session.get(Server, server_id)
    if server is None:
        raise NotFound("server not found")
    return server


def resolve(session: Session, ref: str) -> Server:
    """A server by id, or by exact name when that name is unique."""
    server = session.get(Server, ref)
    if server is not None:
        return server
    matches = session.scalars(select(Server).where(Server.name == ref).limit(2)).all()
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"no server with id or name {ref!r}")
    raise Conflict(f"several servers are named {ref!r}; use the id")


def register(session: Session, name: str, ips: list[str], region: str | None, *, actor: str) -> Server:
    """A server known to the operator but without an agent yet (agent status not_installed)."""
    if not name.strip() or len(name) > 255:
        raise Invalid("name: 1-255 characters")
    server = Server(name=name.strip(), ips=list(ips), region=regions.ensure(session, region))
    session.add(server)
    session.flush()
    audit.record(
        session, actor, "add_server", target_type="server", target_id=server.id, target_name=server.name
    )
    return server


def update_server(session: Session, server_id: str, changes: dict[str, Any], *, actor: str) -> Server:
    server = get_server(session, server_id)
    before: dict[str, Any] = {}
    if "name" in changes and changes["name"] is not None:
        name = str(changes["name"]).strip()
        if not name or len(name) > 255:
            raise Invalid("name: 1-255 characters")
        before["name"], server.name = server.name, name
    if "region" in changes and changes["region"] is not None:
        region = regions.ensure(session, changes["region"])
        if region != server.region and server.edition is not None:
            raise Conflict(
                "disable protection before moving the server to another region (quotas are per region)"
            )
        before["region"], server.region = server.region, region
    if "server_group_id" in changes:
        gid = changes["server_group_id"]
        if gid is not None and session.get(ServerGroup, gid) is None:
            raise NotFound("server group not found")
        before["server_group_id"], server.server_group_id = server.server_group_id, gid
    if "asset_importance" in changes and changes["asset_importance"] is not None:
        if changes["asset_importance"] not in ASSET_IMPORTANCE:
            raise Invalid(f"asset_importance must be one of {', '.join(ASSET_IMPORTANCE)}")
        before["asset_importance"], server.asset_importance = (
            server.asset_importance,
            changes["asset_importance"],
        )
    if "labels" in changes and changes["labels"] is not None:
        labels = [str(x).strip() for x in changes["labels"] if str(x).strip()]
        if len(labels) > MAX_LABELS or any(len(x) > 64 for x in labels):
            raise Invalid(f"labels: at most {MAX_LABELS}, each at most 64 characters")
        before["labels"], server.labels = server.labels, sorted(set(labels))
    audit.record(
        session,
        actor,
        "modify_server",
        target_type="server",
        target_id=server.id,
        target_name=server.name,
        before=before,
    )
    return server


def delete_server(session: Session, server_id: str, *, actor: str) -> None:
    """Delete a server; its quota becomes idle (FK ON DELETE SET NULL, done explicitly for SQLite too)."""
    server = get_server(session, server_id)
    quota = session.scalar(select(Quota).where(Quota.server_id == server.id))
    if quota is not None:
        quota.server_id = None
        quota.bound_at = None
    session.flush()
    session.delete(server)
    audit.record(
        session,
        actor,
        "delete_server",
        target_type="server",
        target_id=server_id,
        target_name=server.name,
        freed_quota_id=quota.id if quota else None,
    )


def statistics(session: Session, region: str | None = None) -> dict[str, Any]:
    base = select(Server)
    if region:
        base = base.where(Server.region == region)
    sub = base.subquery()

    def counts(column: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in session.execute(select(column, func.count()).group_by(column))}

    return {
        "total": session.scalar(select(func.count()).select_from(sub)) or 0,
        "agent_status": counts(sub.c.agent_status),
        "protection_status": counts(sub.c.protection_status),
        "scan_result": counts(sub.c.scan_result),
        "edition": {("none" if k == "None" else k): v for k, v in counts(sub.c.edition).items()},
    }


# ---- server groups ----------------------------------------------------------------------------------


def list_groups(session: Session) -> list[tuple[ServerGroup, int]]:
    counts = dict(
        session.execute(select(Server.server_group_id, func.count()).group_by(Server.server_group_id)).all()
    )
    return [
        (g, int(counts.get(g.id, 0))) for g in session.scalars(select(ServerGroup).order_by(ServerGroup.name))
    ]


def create_group(session: Session, name: str, *, actor: str) -> ServerGroup:
    if not _GROUP_NAME.match(name):
        raise Invalid("server group name: 1-64 letters, digits or _-.*+ (no spaces)")
    if session.scalar(select(ServerGroup).where(ServerGroup.name == name)) is not None:
        raise Conflict(f"server group {name!r} already exists")
    group = ServerGroup(name=name)
    session.add(group)
    session.flush()
    audit.record(
        session, actor, "add_server_group", target_type="server_group", target_id=group.id, target_name=name
    )
    return group


def delete_group(session: Session, group_id: str, *, actor: str) -> None:
    group = session.get(ServerGroup, group_id)
    if group is None:
        raise NotFound("server group not found")
    for server in session.scalars(select(Server).where(Server.server_group_id == group_id)):
        server.server_group_id = None
    session.delete(group)
    audit.record(
        session,
        actor,
        "delete_server_group",
        target_type="server_group",
        target_id=group_id,
        target_name=group.name,
    )


# ---- asset fingerprints -----------------------------------------------------------------------------


def store_assets(session: Session, server: Server, event: AssetsEvent, now: datetime) -> None:
    """Keep the latest snapshot per category; a category that failed on the agent keeps its old data."""
    snapshot = event.snapshot
    for category in ASSET_CATEGORIES:
        if category in snapshot.errors:
            continue
        items = [item.model_dump(mode="json") for item in getattr(snapshot, category)]
        row = session.scalar(
            select(AssetSnapshotRow).where(
                AssetSnapshotRow.server_id == server.id, AssetSnapshotRow.category == category
            )
        )
        if row is None:
            session.add(
                AssetSnapshotRow(
                    server_id=server.id, category=category, data=items, collected_at=snapshot.collected_at
                )
            )
        elif row.collected_at <= snapshot.collected_at:
            row.data = items
            row.collected_at = snapshot.collected_at
    errors = [{"category": k, "error": v} for k, v in sorted(snapshot.errors.items())]
    row = session.scalar(
        select(AssetSnapshotRow).where(
            AssetSnapshotRow.server_id == server.id, AssetSnapshotRow.category == "errors"
        )
    )
    if row is None:
        session.add(
            AssetSnapshotRow(
                server_id=server.id, category="errors", data=errors, collected_at=snapshot.collected_at
            )
        )
    else:
        row.data = errors
        row.collected_at = snapshot.collected_at


def get_assets(session: Session, server_id: str) -> dict[str, dict[str, Any]]:
    get_server(session, server_id)
    out: dict[str, dict[str, Any]] = {
        c: {"collected_at": None, "items": []} for c in (*ASSET_CATEGORIES, "errors")
    }
    for row in session.scalars(select(AssetSnapshotRow).where(AssetSnapshotRow.server_id == server_id)):
        out[row.category] = {"collected_at": row.collected_at, "items": row.data}
    return out


def purge_assets(session: Session, server_id: str) -> None:
    session.execute(delete(AssetSnapshotRow).where(AssetSnapshotRow.server_id == server_id))
