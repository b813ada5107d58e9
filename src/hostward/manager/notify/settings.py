"""Notification settings (one global setting): what is notified, when, and the two channels.

The SMTP password and the webhook secret are write-only: ``public()`` replaces them with ``*_set`` flags,
and an update that leaves them out keeps the stored values.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.orm import Session

from hostward.manager.settings_store import service as store
from hostward.wire.alarms import ALARM_CLASSES, SEVERITIES

SETTINGS_KEY = "notifications"
STATE_KEY = "notifications_state"
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")
Severity = Literal["critical", "high", "medium", "low"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailSettings(_Model):
    enabled: bool = False
    host: str = Field(default="", max_length=255)
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str = Field(default="", max_length=255)
    password: str = Field(default="", max_length=1024)
    sender: str = Field(default="", max_length=255)
    recipients: list[str] = Field(default_factory=list, max_length=50)
    timeout_s: float = Field(default=10.0, gt=0, le=30)

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if value and not _EMAIL.match(value):
            raise ValueError("sender: an e-mail address")
        return value

    @field_validator("recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        cleaned = [v.strip() for v in value if v.strip()]
        for v in cleaned:
            if not _EMAIL.match(v) or len(v) > 255:
                raise ValueError(f"recipients: {v!r} is not an e-mail address")
        return list(dict.fromkeys(cleaned))


class WebhookSettings(_Model):
    enabled: bool = False
    url: str = Field(default="", max_length=2000)
    secret: str = Field(default="", max_length=1024)
    timeout_s: float = Field(default=10.0, gt=0, le=30)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^\s/?#]+(/[^\s]*)?$", value):
            raise ValueError("url: an http:// or https:// URL")
        return value


class NotificationSettings(_Model):
    realtime_enabled: bool = True
    auto_blocking: bool = Field(default=True, description="real-time notice of automatic blocking actions")
    daily_enabled: bool = True
    daily_time: str = Field(default="10:00", description="HH:MM in ``timezone``")
    timezone: str = Field(default="UTC", max_length=64)
    severities: list[Severity] = Field(default_factory=lambda: list(SEVERITIES))
    masked_event_classes: list[str] = Field(default_factory=list, max_length=200)
    email: EmailSettings = Field(default_factory=EmailSettings)
    webhook: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("daily_time")
    @classmethod
    def _time(cls, value: str) -> str:
        if not _TIME.match(value):
            raise ValueError("daily_time: HH:MM (24 h)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timezone: unknown time zone {value!r}") from exc
        return value

    @field_validator("masked_event_classes")
    @classmethod
    def _classes(cls, value: list[str]) -> list[str]:
        for code in value:
            if code not in ALARM_CLASSES:
                raise ValueError(f"masked_event_classes: unknown alarm class {code!r}")
        return list(dict.fromkeys(value))

    @property
    def channels(self) -> list[str]:
        out = []
        if self.email.enabled and self.email.host and self.email.recipients:
            out.append("email")
        if self.webhook.enabled and self.webhook.url:
            out.append("webhook")
        return out

    def wants_alarm(self, event_class: str, severity: str) -> bool:
        return severity in self.severities and event_class not in self.masked_event_classes


class EmailUpdate(EmailSettings):
    password: str | None = Field(default=None, max_length=1024, description="omit to keep the stored one")  # type: ignore[assignment]


class WebhookUpdate(WebhookSettings):
    secret: str | None = Field(default=None, max_length=1024, description="omit to keep the stored one")  # type: ignore[assignment]


class NotificationUpdate(NotificationSettings):
    email: EmailUpdate = Field(default_factory=EmailUpdate)
    webhook: WebhookUpdate = Field(default_factory=WebhookUpdate)


def load(session: Session) -> NotificationSettings:
    raw = store.get(session, SETTINGS_KEY)
    try:
        return NotificationSettings.model_validate(raw or {})
    except ValueError:
        return NotificationSettings()


def save(session: Session, update: NotificationUpdate, now: datetime) -> NotificationSettings:
    current = load(session)
    data = update.model_dump()
    if data["email"]["password"] is None:
        data["email"]["password"] = current.email.password
    if data["webhook"]["secret"] is None:
        data["webhook"]["secret"] = current.webhook.secret
    value = NotificationSettings.model_validate(data)
    store.put(session, SETTINGS_KEY, value.model_dump(), now)
    return value


def public(value: NotificationSettings) -> dict[str, Any]:
    """The settings without secrets (``password_set`` / ``secret_set`` instead)."""
    data = value.model_dump()
    data["email"]["password_set"] = bool(data["email"].pop("password"))
    data["webhook"]["secret_set"] = bool(data["webhook"].pop("secret"))
    return data


def load_state(session: Session) -> dict[str, Any]:
    raw = store.get(session, STATE_KEY)
    return dict(raw) if isinstance(raw, dict) else {}


def save_state(session: Session, state: dict[str, Any], now: datetime) -> None:
    store.put(session, STATE_KEY, state, now)
