"""Delivery channels: e-mail over SMTP (smtplib) and a JSON webhook (optionally HMAC-SHA256 signed).

A failed delivery raises ``DeliveryFailed``; the job queue retries it with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import httpx

from hostward import __version__
from hostward.core.errors import HostwardError
from hostward.manager.notify.settings import EmailSettings, WebhookSettings

SIGNATURE_HEADER = "X-Hostward-Signature"
TIMESTAMP_HEADER = "X-Hostward-Timestamp"


class DeliveryFailed(HostwardError):
    code = "notification_failed"
    status = 502


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>." + body): receivers recompute and compare."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send_email(settings: EmailSettings, subject: str, text: str) -> None:
    if not settings.host or not settings.recipients:
        raise DeliveryFailed("e-mail: no SMTP server or no recipient configured")
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.sender or f"hostward@{settings.host}"
    msg["To"] = ", ".join(settings.recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="hostward")
    msg.set_content(text)
    try:
        smtp: smtplib.SMTP
        if settings.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_s, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.username:
                smtp.login(settings.username, settings.password)
            refused = smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"e-mail via {settings.host}:{settings.port}: {exc}") from exc
    if refused:
        raise DeliveryFailed(f"e-mail: recipients refused: {', '.join(sorted(refused))}")


def send_webhook(
    settings: WebhookSettings, payload: dict[str, Any], *, delivery_id: str, transport: Any = None
) -> int:
    """POST ``payload`` as JSON; returns the HTTP status (2xx), raises DeliveryFailed otherwise."""
    if not settings.url:
        raise DeliveryFailed("webhook: no URL configured")
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"hostward/{__version__}",
        "X-Hostward-Event": str(payload.get("type", "")),
        "X-Hostward-Delivery": delivery_id,
        TIMESTAMP_HEADER: timestamp,
    }
    if settings.secret:
        headers[SIGNATURE_HEADER] = signature(settings.secret, timestamp, body)
    try:
        with httpx.Client(timeout=settings.timeout_s, transport=transport, follow_redirects=False) as client:
            response = client.post(settings.url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"webhook {settings.url}: {exc or type(exc).__name__}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"webhook {settings.url}: HTTP {response.status_code}")
    return response.status_code
