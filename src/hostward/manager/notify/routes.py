"""Notification settings: ``GET/PUT /settings/notifications`` and a test send."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from hostward.core.errors import HostwardError
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


@router.post("/settings/notifications/test")
def test_notification(body: TestIn, principal: Admin, ctx: Ctx) -> dict[str, Any]:
    """Send a test message now on one channel (enabled or not) and say how it went."""
    with ctx.uow() as session:
        current = settings.load(session)
    message = {"type": "test", "requested_by": principal.username, "at": ctx.clock.now().isoformat()}
    try:
        if body.channel == "email":
            subject, text = service.render(message)
            service.channels.send_email(current.email, subject, text)
        else:
            service.channels.send_webhook(current.webhook, message, delivery_id="test")
    except HostwardError as exc:
        return {"ok": False, "error": exc.message}
    return {"ok": True, "error": None}
