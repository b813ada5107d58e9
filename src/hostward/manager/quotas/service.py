"""Quotas: add, list, bind/unbind (through protection), delete, and status by expiry and grace."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, Invalid, NotFound
from hostward.manager.audit import service as audit
from hostward.manager.quotas.models import EDITIONS, QUOTA_STATUSES, Quota
from hostward.manager.regions import service as regions
from hostward.manager.servers.models import Server
from hostward.manager.settings import ManagerSettings

MAX_ADD = 10000


def quota_status(expires_at: datetime | None, now: datetime, grace_days: int) -> str:
    """normal until expiry; expired (still protecting) during the grace period; frozen after it."""
    if expires_at is None or now < expires_at:
        return "normal"
    if now < expires_at + timedelta(days=grace_days):
        return "expired"
    return "frozen"


def add_quotas(
    session: Session,
    edition: str,
    count: int,
    *,
    expires_at: datetime | None,
    region: str | None,
    now: datetime,
    settings: ManagerSettings,
    actor: str,
) -> list[Quota]:
    if edition not in EDITIONS:
        raise Invalid(f"edition must be one of {', '.join(EDITIONS)}")
    if not 1 <= count <= MAX_ADD:
        raise Invalid(f"count must be between 1 and {MAX_ADD}")
    region_name = regions.ensure(session, region)
    status = quota_status(expires_at, now, settings.quota_grace_days)
    quotas = [
        Quota(edition=edition, region=region_name, expires_at=expires_at, status=status, created_at=now)
        for _ in range(count)
    ]
    session.add_all(quotas)
    session.flush()
    audit.record(
        session,
        actor,
        "add_quotas",
        target_type="quota",
        target_name=edition,
        edition=edition,
        count=count,
        region=region_name,
        expires_at=expires_at.isoformat() if expires_at else None,
    )
    return quotas


def list_quotas(
    session: Session,
    *,
    region: str | None = None,
    edition: str | None = None,
    status: str | None = None,
    usage: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Quota, str | None]], int]:
    stmt = select(Quota, Server.name).outerjoin(Server, Server.id == Quota.server_id)
    if region:
        stmt = stmt.where(Quota.region == region)
    if edition:
        stmt = stmt.where(Quota.edition == edition)
    if status:
        if status not in QUOTA_STATUSES:
            raise Invalid(f"status must be one of {', '.join(QUOTA_STATUSES)}")
        stmt = stmt.where(Quota.status == status)
    if usage == "idle":
        stmt = stmt.where(Quota.server_id.is_(None))
    elif usage == "used":
        stmt = stmt.where(Quota.server_id.is_not(None))
    elif usage:
        raise Invalid("usage must be idle or used")
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Quota.created_at, Quota.id).offset(offset).limit(limit)).all()
    return [(q, name) for q, name in rows], total


def get_quota(session: Session, quota_id: str) -> Quota:
    quota = session.get(Quota, quota_id)
    if quota is None:
        raise NotFound("quota not found")
    return quota


def delete_quota(session: Session, quota_id: str, *, actor: str) -> None:
    quota = get_quota(session, quota_id)
    if quota.server_id is not None:
        raise Conflict("quota is in use; unbind it first")
    session.delete(quota)
    audit.record(
        session, actor, "delete_quota", target_type="quota", target_id=quota_id, edition=quota.edition
    )


def usage_summary(session: Session, region: str | None = None) -> dict[str, dict[str, int]]:
    stmt = select(Quota.edition, Quota.server_id.is_not(None), Quota.status, func.count()).group_by(
        Quota.edition, Quota.server_id.is_not(None), Quota.status
    )
    if region:
        stmt = stmt.where(Quota.region == region)
    out: dict[str, dict[str, int]] = {}
    for edition, used, status, n in session.execute(stmt):
        row = out.setdefault(
            edition, {"total": 0, "used": 0, "idle": 0, "normal": 0, "expired": 0, "frozen": 0}
        )
        row["total"] += n
        row["used" if used else "idle"] += n
        row[status] += n
    return out


def refresh_quota_statuses(
    session: Session, now: datetime, grace_days: int, settings: ManagerSettings | None = None
) -> int:
    """Move quotas to expired / frozen as time passes; re-derive protection of affected servers."""
    from hostward.manager.protection import service as protection

    changed = 0
    for quota in session.scalars(select(Quota).where(Quota.expires_at.is_not(None))):
        status = quota_status(quota.expires_at, now, grace_days)
        if status == quota.status:
            continue
        old = quota.status
        quota.status = status
        changed += 1
        audit.record(
            session, "system", "quota_status", target_type="quota", target_id=quota.id, old=old, new=status
        )
        if quota.server_id is not None and settings is not None:
            server = session.get(Server, quota.server_id)
            if server is not None:
                protection.refresh_status(session, server, now, settings)
    return changed
