"""Handling History: the audit record of every change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from hostward.manager.audit import service
from hostward.manager.deps import Ctx, Reader
from hostward.manager.schemas_common import ApiModel, Page, paging

router = APIRouter(tags=["audit"])


class AuditOut(ApiModel):
    id: str
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    target_name: str
    remark: str
    detail: dict[str, Any]


@router.get("/audit", response_model=Page[AuditOut])
def list_audit(
    _p: Reader,
    ctx: Ctx,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    offset: int = 0,
    limit: int = 50,
) -> Page[AuditOut]:
    offset, limit = paging(offset, limit)
    with ctx.uow() as session:
        rows, total = service.list_records(
            session,
            actor=actor,
            action=action,
            target_type=target_type,
            target_id=target_id,
            offset=offset,
            limit=limit,
        )
        return Page(items=[AuditOut.model_validate(r) for r in rows], total=total, offset=offset, limit=limit)
