"""Installation & Configuration -> Notifications: real-time and daily alarm notifications by e-mail and
webhook (administrators change them; everyone else reads them, secrets hidden)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from hostward.core.errors import Invalid
from hostward.manager.audit import service as audit
from hostward.manager.console.web import PREFIX, FormAdmin, Next, User, ctx_of, redirect, render, safe_next
from hostward.manager.notify import service, settings
from hostward.wire.alarms import ALARM_CLASSES, SEVERITIES

router = APIRouter()

PAGE = PREFIX + "/notifications"
Short = Annotated[str, Form(max_length=2000)]


@router.get("/notifications")
def notifications_page(request: Request, user: User) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        value = settings.load(session)
        return render(
            request,
            session,
            user,
            "notifications.html",
            active="notifications",
            title="Notifications",
            s=settings.public(value),
            channels=value.channels,
            severities=SEVERITIES,
            classes=ALARM_CLASSES,
            deliveries=service.recent_deliveries(session),
        )


def _lines(text: str) -> list[str]:
    return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]


@router.post("/notifications")
async def save(request: Request, user: FormAdmin) -> Response:
    form = await request.form()

    def text(name: str, default: str = "") -> str:
        value = form.get(name, default)
        return value[:4000] if isinstance(value, str) else default

    def flag(name: str) -> bool:
        return form.get(name) is not None

    data = {
        "realtime_enabled": flag("realtime_enabled"),
        "auto_blocking": flag("auto_blocking"),
        "daily_enabled": flag("daily_enabled"),
        "daily_time": text("daily_time", "10:00"),
        "timezone": text("timezone", "UTC").strip() or "UTC",
        "severities": [v for v in form.getlist("severities") if isinstance(v, str)],
        "masked_event_classes": [v for v in form.getlist("masked_event_classes") if isinstance(v, str)],
        "email": {
            "enabled": flag("email_enabled"),
            "host": text("email_host").strip(),
            "port": text("email_port", "25").strip() or "25",
            "security": text("email_security", "none"),
            "username": text("email_username").strip(),
            "password": text("email_password") or None,
            "sender": text("email_sender").strip(),
            "recipients": _lines(text("email_recipients")),
        },
        "webhook": {
            "enabled": flag("webhook_enabled"),
            "url": text("webhook_url").strip(),
            "secret": text("webhook_secret") or None,
        },
    }
    if flag("email_clear_password"):
        data["email"]["password"] = ""  # type: ignore[index]
    if flag("webhook_clear_secret"):
        data["webhook"]["secret"] = ""  # type: ignore[index]
    try:
        update = settings.NotificationUpdate.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise Invalid(f"{loc}: {err['msg']}") from exc
    ctx = ctx_of(request)
    with ctx.uow() as session:
        value = settings.save(session, update, ctx.clock.now())
        audit.record(
            session,
            user.username,
            "set_notifications",
            target_type="setting",
            target_id=settings.SETTINGS_KEY,
            channels=value.channels,
        )
    nxt = form.get("next")
    active = ", ".join(value.channels) or "no channel enabled"
    return redirect(
        safe_next(nxt if isinstance(nxt, str) else None, PAGE), ("ok", f"Notifications saved ({active}).")
    )


@router.post("/notifications/test")
def send_test(
    request: Request,
    user: FormAdmin,
    channel: Annotated[str, Form(pattern="^(email|webhook)$")],
    next: Next = "",
) -> Response:
    ctx = ctx_of(request)
    with ctx.uow() as session:
        service.queue_test(session, channel, actor=user.username, now=ctx.clock.now())
    what = "e-mail" if channel == "email" else "webhook"
    text = f"Test {what} queued; its outcome shows under Recent deliveries."
    return redirect(safe_next(next, PAGE), ("ok", text))
