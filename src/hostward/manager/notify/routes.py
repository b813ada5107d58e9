"""Notification settings: ``GET/PUT /settings/notifications`` and a test send."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from hostward.manager.audit import service as audit
from hostward.manager.deps import Admin, Ctx, Reader
from hostward.manager.notify import service, settings

router = APIRouter(tags=["notifications"])


class TestIn(BaseModel):
    channel: Literal["email", "webhook"]


@router.get("/settings/notifications")
def get_notifications(_p: Reader, ctx: Ctx) -> dict[str, Any]:
    """Real-time and daily notification settings (the SMTP password and webhook secret are not shown)."""
    with ctx.uow() as session:
        return settings.public(settings.load(session))


@router.put("/settings/notifications")
def put_notifications(body: settings.NotificationUpdate, principal: Admin, ctx: Ctx) -> dict[str, Any]:
    """Replace the settings; leave ``email.password`` / ``webhook.secret`` out to keep the stored ones."""
    with ctx.uow() as session:
        value = settings.save(session, body, ctx.clock.now())
        audit.record(
            session,
            principal.username,
            "set_notifications",
            target_type="setting",
            target_id=settings.SETTINGS_KEY,
            channels=value.channels,
            realtime=value.realtime_enabled,
            daily=value.daily_enabled,
        )
        return settings.public(value)


@router.post("/settings/notifications/test", status_code=202)
def test_notification(body: TestIn, principal: Admin, ctx: Ctx) -> dict[str, Any]:
    """Queue a test message on one channel (sent even while the channel is off); the outcome shows in
    ``GET /settings/notifications/deliveries``."""
    with ctx.uow() as session:
        job_id = service.queue_test(session, body.channel, actor=principal.username, now=ctx.clock.now())
    return {"queued": True, "job_id": job_id}


@router.get("/settings/notifications/deliveries")
def deliveries(_p: Reader, ctx: Ctx) -> list[dict[str, Any]]:
    """The latest notification deliveries (status, attempts, last error, next retry)."""
    with ctx.uow() as session:
        return service.recent_deliveries(session)
