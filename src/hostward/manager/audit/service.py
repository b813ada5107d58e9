"""Writing and reading the audit record (Handling History)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostward.manager.audit.models import AuditRecord


def record(
    session: Session,
    actor: str,
    action: str,
    *,
    target_type: str = "",
    target_id: str = "",
    target_name: str = "",
    remark: str = "",
    **detail: Any,
) -> AuditRecord:
    """Add one audit entry in the caller's transaction."""
    entry = AuditRecord(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_name=target_name,
        remark=remark,
        detail=detail,
    )
    session.add(entry)
    return entry


def list_records(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[AuditRecord], int]:
    stmt = select(AuditRecord)
    if actor:
        stmt = stmt.where(AuditRecord.actor == actor)
    if action:
        stmt = stmt.where(AuditRecord.action == action)
    if target_type:
        stmt = stmt.where(AuditRecord.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditRecord.target_id == target_id)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(AuditRecord.at.desc()).offset(offset).limit(limit)).all()
    return list(rows), total
