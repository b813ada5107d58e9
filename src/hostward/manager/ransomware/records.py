"""Registers the ``ransomware_status`` and ``ransomware_snapshot`` record handlers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.manager.agentlink.ingest import register
from hostward.manager.ransomware import service
from hostward.manager.servers.models import Server
from hostward.wire import RecordEvent


@register(service.STATUS_TOPIC)
def on_ransomware_status(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    service.record_status(session, server, event, now)


@register(service.SNAPSHOT_TOPIC)
def on_ransomware_snapshot(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    service.record_snapshot(session, server, event, now)
