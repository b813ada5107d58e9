"""Security Operations -> Handling History: the audit record, filtered and paged."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from hostward.manager.audit import service as audit
from hostward.manager.console.web import Pager, User, ctx_of, opt, render

router = APIRouter()

Filter = Annotated[str | None, Query(max_length=128)]
TARGET_TYPES = (
    "server",
    "alarm",
    "alarm_whitelist",
    "quota",
    "policy_group",
    "enrollment_token",
    "user",
    "api_token",
    "server_group",
    "setting",
    "manager",
)


def detail_text(detail: dict[str, object]) -> str:
    if not detail:
        return ""
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)


@router.get("/history")
def history_page(
    request: Request,
    user: User,
    actor: Filter = None,
    action: Filter = None,
    target_type: Filter = None,
    target_id: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    pager = Pager.of(request, default_size=50)
    filters = {
        "actor": opt(actor),
        "action": opt(action),
        "target_type": opt(target_type),
        "target_id": opt(target_id),
    }
    with ctx.uow() as session:
        rows, pager.total = audit.list_records(session, **filters, offset=pager.offset, limit=pager.size)
        return render(
            request,
            session,
            user,
            "history.html",
            active="history",
            title="Handling History",
            rows=[(r, detail_text(r.detail)) for r in rows],
            pager=pager,
            filters=filters,
            target_types=TARGET_TYPES,
        )
