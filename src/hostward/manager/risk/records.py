"""Registers the record handlers of vulnerability findings and fix outcomes, baseline, complexity and
weak-password results (imported by ``load_builtin_handlers`` only)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from hostward.manager.agentlink.ingest import register
from hostward.manager.baseline import fixes as baseline_fixes
from hostward.manager.baseline import service as baseline
from hostward.manager.servers.models import Server
from hostward.manager.vulns import fixes
from hostward.manager.vulns import service as vulns
from hostward.wire import RecordEvent


@register(vulns.RECORD_TOPIC)
def on_vuln_findings(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    vulns.ingest_findings(session, server, event.data, now)


@register(baseline.BASELINE_TOPIC)
def on_baseline_results(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    baseline.ingest_results(session, server, event.data, now)


@register(baseline.COMPLEXITY_TOPIC)
def on_password_complexity(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    baseline.ingest_complexity(session, server, event.data, now)


@register(baseline.WEAKPASS_TOPIC)
def on_weak_passwords(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    baseline.ingest_weak_passwords(session, server, event.data, now)


@register(fixes.FIX_TOPIC)
def on_vuln_fix(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    fixes.ingest_fix(session, server, event.data, now)


@register(baseline_fixes.FIX_TOPIC)
def on_baseline_fix(session: Session, server: Server, event: RecordEvent, now: datetime) -> None:
    baseline_fixes.ingest_fix(session, server, event.data, now)
