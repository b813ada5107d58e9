"""Servers & Quota -> Quotas tab: list with filters, add (admin), unbind, delete, auto-bind switch."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from hostward.core.errors import Conflict, Invalid
from hostward.manager.audit import service as audit
from hostward.manager.console.web import (
    PREFIX,
    FormAdmin,
    FormOperator,
    Next,
    Pager,
    User,
    ctx_of,
    current_region,
    opt,
    redirect,
    render,
    safe_next,
)
from hostward.manager.protection import service as protection
from hostward.manager.quotas import service as quotas
from hostward.manager.quotas.models import EDITIONS
from hostward.manager.settings_store import service as global_settings

router = APIRouter()

Filter = Annotated[str | None, Query(max_length=64)]


@router.get("/quotas")
def quotas_page(
    request: Request,
    user: User,
    edition: Filter = None,
    status: Filter = None,
    usage: Filter = None,
) -> Response:
    ctx = ctx_of(request)
    region = current_region(request)
    pager = Pager.of(request)
    filters = {"edition": opt(edition), "status": opt(status), "usage": opt(usage)}
    with ctx.uow() as session:
        rows, pager.total = quotas.list_quotas(
            session,
            region=region,
            edition=filters["edition"],
            status=filters["status"],
            usage=filters["usage"],
            offset=pager.offset,
            limit=pager.size,
        )
        summary = quotas.usage_summary(session, region)
        auto_bind = global_settings.get(session, "auto_bind") or {"enabled": False, "edition": None}
        return render(
            request,
            session,
            user,
            "quotas.html",
            active="servers",
            title="Servers & Quota",
            rows=rows,
            pager=pager,
            filters=filters,
            summary=summary,
            editions=EDITIONS,
            auto_bind=auto_bind,
            enable_editions=protection.ENABLE_EDITIONS,
        )


def _expiry(value: str) -> datetime | None:
    """A date from the form means "valid through that day" (UTC); empty = never expires."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise Invalid("expiry: a date as YYYY-MM-DD, or empty for never") from exc
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


@router.post("/quotas")
def add_quotas(
    request: Request,
    user: FormAdmin,
    edition: Annotated[str, Form(max_length=16)] = "",
    count: Annotated[str, Form(max_length=8)] = "1",
    expires: Annotated[str, Form(max_length=10)] = "",
    region: Annotated[str, Form(max_length=64)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    expires_at = _expiry(expires.strip())
    try:
        number = int(count)
    except ValueError as exc:
        raise Invalid(f"count must be a whole number from 1 to {quotas.MAX_ADD}") from exc
    with ctx.uow() as session:
        added = quotas.add_quotas(
            session,
            edition,
            number,
            expires_at=expires_at,
            region=opt(region) or current_region(request),
            now=ctx.clock.now(),
            settings=ctx.settings,
            actor=user.username,
        )
        where = added[0].region if added else "default"
    until = f", valid through {expires}" if expires_at else ", no expiry"
    return redirect(
        safe_next(next, PREFIX + "/quotas"),
        ("ok", f"Added {number} {edition} quota{'s' if number != 1 else ''} in region {where}{until}."),
    )


@router.post("/quotas/{quota_id}/unbind")
def unbind(request: Request, quota_id: str, user: FormOperator, next: Next = "") -> Response:
    """Unbinding frees the quota and turns protection off on its server."""
    ctx = ctx_of(request)
    with ctx.uow() as session:
        quota = quotas.get_quota(session, quota_id)
        if quota.server_id is None:
            raise Conflict("quota is idle")
        protection.disable_one(session, quota.server_id, ctx.clock.now(), ctx.settings, actor=user.username)
    return redirect(
        safe_next(next, PREFIX + "/quotas"), ("ok", "Quota unbound; protection disabled on its server.")
    )


@router.post("/quotas/{quota_id}/delete")
def delete(request: Request, quota_id: str, user: FormAdmin, next: Next = "") -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        quotas.delete_quota(session, quota_id, actor=user.username)
    return redirect(safe_next(next, PREFIX + "/quotas"), ("ok", "Quota deleted."))


@router.post("/quotas/auto-bind")
def auto_bind(
    request: Request,
    user: FormAdmin,
    enabled: Annotated[str, Form(max_length=8)] = "",
    edition: Annotated[str, Form(max_length=16)] = "",
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    on = enabled in ("1", "on", "true")
    chosen = opt(edition)
    if chosen is not None and chosen not in protection.ENABLE_EDITIONS:
        raise Invalid(f"auto-bind edition must be one of {', '.join(protection.ENABLE_EDITIONS)}")
    value: dict[str, Any] = {"enabled": on, "edition": chosen}
    with ctx.uow() as session:
        global_settings.put(session, "auto_bind", value, ctx.clock.now())
        audit.record(
            session, user.username, "change_auto_bind", target_type="setting", target_id="auto_bind", **value
        )
    text = "Auto-bind is on: newly enrolled online servers get an idle quota." if on else "Auto-bind is off."
    return redirect(safe_next(next, PREFIX + "/quotas"), ("ok", text))
