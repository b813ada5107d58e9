"""Registers the ``fim_change`` record handler (imported by ``load_builtin_handlers`` only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.manager.agentlink.ingest import register
from hostward.manager.fim import service
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent


@register(service.RECORD_TOPIC)
def on_fim_change(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    service.record_change(session, server, event, now)
