"""Registers the ``wtp_status`` and ``wtp_tamper`` record handlers (imported by ``load_builtin_handlers``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.manager.agentlink.ingest import register
from hostward.manager.servers.models import Server
from hostward.manager.wtp import service
from hostward.wire import RecordEvent


@register(service.STATUS_TOPIC)
def on_wtp_status(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    service.record_status(session, server, event, now)


@register(service.TAMPER_TOPIC)
def on_wtp_tamper(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    service.record_tamper(session, server, event, now)
