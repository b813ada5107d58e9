"""Alarm ingest (merging repeats, whitelist at ingest), handling actions with undo, whitelist rules.

Evidence uses canonical keys so that whitelist rules work across detections: ``file_path``,
``file_hash``, ``process_path``, ``process_cmdline``, ``login_ip``, ``username`` (detections add
whatever else they know: process tree, ports, old/new attributes, ...).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from hostward.core.errors import Conflict, HostwardError, Invalid, NotFound
from hostward.manager.alarms.models import (
    ALARM_STATUSES,
    WHITELIST_FIELDS,
    WHITELIST_JUDGES,
    Alarm,
    AlarmWhitelistRule,
)
from hostward.manager.audit import service as audit
from hostward.manager.db.engine import is_postgres
from hostward.manager.servers import listing
from hostward.manager.servers.models import Server
from hostward.wire import ALARM_CLASSES, AlarmEvent
from hostward.wire.alarms import SEVERITIES

HANDLE_ACTIONS = (
    "mark_as_handled",
    "unhandle",
    "ignore",
    "do_not_ignore",
    "add_to_alarm_whitelist",
    "remove_from_alarm_whitelist",
    "isolate_and_kill",
)
MAX_BATCH = 1000
EVIDENCE_ALIASES: dict[str, tuple[str, ...]] = {
    "file_hash": ("file_hash", "sha256"),
    "file_path": ("file_path", "path"),
    "process_path": ("process_path", "exe"),
    "process_cmdline": ("process_cmdline", "cmdline"),
    "login_ip": ("login_ip", "source_ip", "address"),
    "username": ("username", "user"),
}


def evidence_value(evidence: dict[str, Any], field: str) -> str | None:
    for key in EVIDENCE_ALIASES.get(field, (field,)):
        value = evidence.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def rule_matches(
    rule: AlarmWhitelistRule, server_id: str, event_class: str, evidence: dict[str, Any], now: datetime
) -> bool:
    if rule.expires_at is not None and rule.expires_at <= now:
        return False
    if rule.event_class and rule.event_class != event_class:
        return False
    if rule.server_ids is not None and server_id not in rule.server_ids:
        return False
    value = evidence_value(evidence, rule.field)
    if value is None:
        return False
    if rule.judge == "equal":
        return value == rule.value
    if rule.judge == "contains":
        return rule.value in value
    return fnmatch.fnmatchcase(value, rule.value)


_RULES_CACHE = "alarm_whitelist_rules"


def _active_rules(session: Session, now: datetime) -> list[AlarmWhitelistRule]:
    """Whitelist rules, loaded once per transaction (an ingest batch checks every event against them)."""
    cached: list[AlarmWhitelistRule] | None = session.info.get(_RULES_CACHE)
    if cached is None:
        cached = list(session.scalars(select(AlarmWhitelistRule)))
        session.info[_RULES_CACHE] = cached
    return [r for r in cached if r.expires_at is None or r.expires_at > now]


def _forget_rules(session: Session) -> None:
    session.info.pop(_RULES_CACHE, None)


OpenAlarms = dict[tuple[str, str], "Alarm | None"]


def prefetch_open_alarms(session: Session, server: Server, events: list[AlarmEvent]) -> OpenAlarms:
    """The server's open (unhandled) alarms for these events' (class, fingerprint), in ONE query.

    The result (None = no open alarm) is passed to ``ingest`` as ``open_alarms`` for a batch: merging
    100 events then costs one SELECT instead of one SELECT (and one autoflushed UPDATE) per event.
    The rows are locked on PostgreSQL, as ``ingest``'s own lookup does.
    """
    wanted = {(cls.code, e.fingerprint) for e in events if (cls := ALARM_CLASSES.get(e.event_class))}
    found: OpenAlarms = dict.fromkeys(wanted)
    if not wanted:
        return found
    stmt = (
        select(Alarm)
        .where(
            Alarm.server_id == server.id,
            Alarm.status == "unhandled",
            Alarm.fingerprint.in_({fp for _, fp in wanted}),
        )
        .order_by(Alarm.id)
    )
    if is_postgres(session):
        stmt = stmt.with_for_update()
    for alarm in session.scalars(stmt):
        key = (alarm.event_class, alarm.fingerprint)
        if key in found and found[key] is None:
            found[key] = alarm
    return found


def ingest(
    session: Session,
    server: Server,
    event: AlarmEvent,
    now: datetime,
    *,
    refresh_risk: bool = True,
    open_alarms: OpenAlarms | None = None,
) -> Alarm:
    """Store a detection: merge into the open alarm with the same fingerprint, or open a new one.

    A batch ingest passes ``refresh_risk=False`` and calls ``refresh_server_risk`` once at the end, and
    ``open_alarms`` from ``prefetch_open_alarms`` (kept up to date here as alarms are opened).
    """
    cls = ALARM_CLASSES.get(event.event_class)
    if cls is None:
        raise Invalid(f"unknown alarm class {event.event_class!r}")
    severity = event.severity or cls.severity
    occurred = min(event.occurred_at, now)
    rule = next(
        (r for r in _active_rules(session, now) if rule_matches(r, server.id, cls.code, event.evidence, now)),
        None,
    )
    cache_key = (cls.code, event.fingerprint)
    existing = None
    if rule is None:
        if open_alarms is not None and cache_key in open_alarms:
            existing = open_alarms[cache_key]
        else:
            stmt = select(Alarm).where(
                Alarm.server_id == server.id,
                Alarm.event_class == cls.code,
                Alarm.fingerprint == event.fingerprint,
                Alarm.status == "unhandled",
            )
            if is_postgres(session):
                stmt = stmt.with_for_update()
            existing = session.scalars(stmt.limit(1)).first()
    if existing is not None:
        existing.count += 1
        if occurred >= existing.last_seen:
            existing.last_seen = occurred
            existing.evidence = dict(event.evidence)
            existing.title = event.title or existing.title
        existing.first_seen = min(existing.first_seen, occurred)
        if SEVERITIES.index(severity) < SEVERITIES.index(existing.severity):
            existing.severity = severity
        if event.evidence.get("vault_id"):
            _link_isolation(session, existing)
        return existing
    alarm = Alarm(
        server_id=server.id,
        event_class=cls.code,
        event_type=cls.event_type,
        name=cls.name,
        category=cls.category,
        severity=severity,
        attack_phase=cls.phase,
        title=event.title or cls.name,
        fingerprint=event.fingerprint,
        evidence=dict(event.evidence),
        first_seen=occurred,
        last_seen=occurred,
        count=1,
    )
    if rule is not None:
        rule.hits += 1
        alarm.status = "handled"
        alarm.handle_action = "whitelisted"
        alarm.handler = "system"
        alarm.handled_at = now
        alarm.whitelist_rule_id = rule.id
    elif open_alarms is not None:
        open_alarms[cache_key] = alarm
    session.add(alarm)
    session.flush()
    if event.evidence.get("vault_id") and alarm.status == "unhandled":
        _link_isolation(session, alarm)
    if refresh_risk:
        refresh_server_risk(session, server)
    return alarm


def _link_isolation(session: Session, alarm: Alarm) -> None:
    # The agent isolated the file before sending the alarm (automatic isolate and kill).
    from hostward.manager.malware.service import link_isolated_alarm

    link_isolated_alarm(session, alarm)


def refresh_server_risk(session: Session, server: Server) -> None:
    """Intrusion count = unhandled alarms; the scan result turns risky while any finding is open."""
    server.risk_intrusions = (
        session.scalar(select(func.count()).where(Alarm.server_id == server.id, Alarm.status == "unhandled"))
        or 0
    )
    if server.scan_result == "scanning":
        return
    risky = server.risk_intrusions + server.risk_vulnerabilities + server.risk_baseline + server.risk_assets
    if risky:
        server.scan_result = "risk"
    elif server.scan_result == "risk":
        server.scan_result = "clean"


def list_alarms(
    session: Session,
    *,
    server_id: str | None = None,
    region: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    event_class: str | None = None,
    category: str | None = None,
    attack_phase: str | None = None,
    q: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
    limit: int = 50,
) -> tuple[list[tuple[Alarm, str]], int]:
    stmt = listing.with_server(Alarm, server_id=server_id, region=region)
    if status:
        stmt = stmt.where(Alarm.status == listing.one_of(status, ALARM_STATUSES, "status"))
    if severity:
        stmt = stmt.where(Alarm.severity == listing.one_of(severity, SEVERITIES, "severity"))
    if event_class:
        stmt = stmt.where(Alarm.event_class == event_class)
    if category:
        stmt = stmt.where(Alarm.category == category)
    if attack_phase:
        stmt = stmt.where(Alarm.attack_phase == attack_phase)
    if since:
        stmt = stmt.where(Alarm.last_seen >= since)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(Alarm.title.ilike(like), Alarm.name.ilike(like), Server.name.ilike(like)))
    return listing.page(session, stmt, (Alarm.last_seen.desc(), Alarm.id), offset, limit)


def get_alarm(session: Session, alarm_id: str) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise NotFound("alarm not found")
    return alarm


def statistics(session: Session, region: str | None = None, server_id: str | None = None) -> dict[str, Any]:
    base = select(Alarm).join(Server, Server.id == Alarm.server_id).where(Alarm.status == "unhandled")
    if region:
        base = base.where(Server.region == region)
    if server_id:
        base = base.where(Alarm.server_id == server_id)
    sub = base.subquery()

    def by(column: Any) -> dict[str, int]:
        return {str(k): int(v) for k, v in session.execute(select(column, func.count()).group_by(column))}

    return {
        "unhandled": session.scalar(select(func.count()).select_from(sub)) or 0,
        "servers_with_alarms": session.scalar(select(func.count(func.distinct(sub.c.server_id)))) or 0,
        "by_severity": by(sub.c.severity),
        "by_event_class": by(sub.c.event_class),
        "by_attack_phase": by(sub.c.attack_phase),
    }


@dataclass
class HandleOutcome:
    alarm_id: str
    ok: bool
    error: HostwardError | None = None


def handle(
    session: Session,
    alarm_ids: list[str],
    action: str,
    *,
    remark: str,
    actor: str,
    now: datetime,
    whitelist: dict[str, Any] | None = None,
) -> list[HandleOutcome]:
    """Apply a handling action (or its undo) to a batch; each alarm succeeds or fails on its own."""
    if action not in HANDLE_ACTIONS:
        raise Invalid(f"action must be one of {', '.join(HANDLE_ACTIONS)}")
    if not alarm_ids or len(alarm_ids) > MAX_BATCH:
        raise Invalid(f"alarm_ids: 1 to {MAX_BATCH} ids")
    outcomes = []
    touched: set[str] = set()
    for alarm_id in dict.fromkeys(alarm_ids):
        try:
            with session.begin_nested():
                alarm = get_alarm(session, alarm_id)
                _apply(session, alarm, action, remark=remark, actor=actor, now=now, whitelist=whitelist)
                touched.add(alarm.server_id)
            outcomes.append(HandleOutcome(alarm_id, True))
        except HostwardError as exc:
            outcomes.append(HandleOutcome(alarm_id, False, exc))
    for server_id in touched:
        server = session.get(Server, server_id)
        if server is not None:
            refresh_server_risk(session, server)
    return outcomes


def _apply(
    session: Session,
    alarm: Alarm,
    action: str,
    *,
    remark: str,
    actor: str,
    now: datetime,
    whitelist: dict[str, Any] | None,
) -> None:
    detail: dict[str, Any] = {"event_class": alarm.event_class}
    if action == "isolate_and_kill":
        # Queues the agent command; the alarm becomes handled when the agent reports the file isolated.
        from hostward.manager.malware.service import isolate_alarm

        isolate_alarm(session, alarm, remark=remark, actor=actor, now=now)
        return
    if action in ("mark_as_handled", "ignore", "add_to_alarm_whitelist"):
        if alarm.status == "handled":
            raise Conflict("alarm is already handled")
        if action == "add_to_alarm_whitelist":
            rule = _rule_from_alarm(session, alarm, whitelist or {}, actor=actor, now=now)
            alarm.whitelist_rule_id = rule.id
            detail["whitelist_rule_id"] = rule.id
        alarm.status = "handled"
        alarm.handle_action = action
        alarm.handle_remark = remark[:2000]
        alarm.handler = actor
        alarm.handled_at = now
    else:
        expected = {
            "unhandle": "mark_as_handled",
            "do_not_ignore": "ignore",
            "remove_from_alarm_whitelist": "add_to_alarm_whitelist",
        }[action]
        if alarm.status != "handled" or alarm.handle_action != expected:
            raise Conflict(
                f"{action} undoes {expected}; this alarm's state is "
                f"{alarm.status}/{alarm.handle_action or '-'}"
            )
        if action == "remove_from_alarm_whitelist" and alarm.whitelist_rule_id:
            created = session.get(AlarmWhitelistRule, alarm.whitelist_rule_id)
            if created is not None:
                session.delete(created)
                _forget_rules(session)
            alarm.whitelist_rule_id = None
        alarm.status = "unhandled"
        alarm.handle_action = None
        alarm.handle_remark = remark[:2000]
        alarm.handler = actor
        alarm.handled_at = now
    audit.record(
        session,
        actor,
        f"alarm_{action}",
        target_type="alarm",
        target_id=alarm.id,
        target_name=alarm.name,
        remark=remark,
        server_id=alarm.server_id,
        **detail,
    )


def _rule_from_alarm(
    session: Session, alarm: Alarm, spec: dict[str, Any], *, actor: str, now: datetime
) -> AlarmWhitelistRule:
    field = spec.get("field")
    if field is None:
        field = next((f for f in WHITELIST_FIELDS if evidence_value(alarm.evidence, f) is not None), None)
        if field is None:
            raise Invalid("this alarm has no evidence field a whitelist rule can match; give field and value")
    value = spec.get("value") or evidence_value(alarm.evidence, field)
    if value is None:
        raise Invalid(f"alarm evidence has no {field}; give a value")
    scope = spec.get("scope", "server")
    server_ids = None if scope == "all" else [alarm.server_id]
    return create_rule(
        session,
        event_class=alarm.event_class,
        field=field,
        judge=spec.get("judge", "equal"),
        value=value,
        server_ids=server_ids,
        expires_at=spec.get("expires_at"),
        description=spec.get("description", f"from alarm {alarm.id}"),
        actor=actor,
        now=now,
    )


# ---- whitelist rules ---------------------------------------------------------------------------------


def create_rule(
    session: Session,
    *,
    event_class: str | None,
    field: str,
    judge: str,
    value: str,
    server_ids: list[str] | None,
    expires_at: datetime | None,
    description: str,
    actor: str,
    now: datetime,
) -> AlarmWhitelistRule:
    if field not in WHITELIST_FIELDS:
        raise Invalid(f"field must be one of {', '.join(WHITELIST_FIELDS)}")
    if judge not in WHITELIST_JUDGES:
        raise Invalid(f"judge must be one of {', '.join(WHITELIST_JUDGES)}")
    if not value or len(value) > 1024:
        raise Invalid("value: 1-1024 characters")
    if event_class is not None and event_class not in ALARM_CLASSES:
        raise Invalid(f"unknown alarm class {event_class!r}")
    if expires_at is not None and expires_at <= now:
        raise Invalid("expires_at must be in the future")
    if server_ids is not None:
        for sid in server_ids:
            if session.get(Server, sid) is None:
                raise NotFound(f"server {sid} not found")
    rule = AlarmWhitelistRule(
        event_class=event_class,
        field=field,
        judge=judge,
        value=value,
        server_ids=server_ids,
        expires_at=expires_at,
        description=description[:1000],
        created_by=actor,
        created_at=now,
    )
    session.add(rule)
    session.flush()
    _forget_rules(session)
    _whitelist_changed(session, server_ids)
    audit.record(
        session,
        actor,
        "add_alarm_whitelist",
        target_type="alarm_whitelist",
        target_id=rule.id,
        target_name=f"{field} {judge} {value}"[:255],
        event_class=event_class,
    )
    return rule


def list_rules(session: Session) -> list[AlarmWhitelistRule]:
    return list(session.scalars(select(AlarmWhitelistRule).order_by(AlarmWhitelistRule.created_at.desc())))


def delete_rule(session: Session, rule_id: str, *, actor: str) -> None:
    """Deleting a rule does not change the handling status of past alarms (as in the reference)."""
    rule = session.get(AlarmWhitelistRule, rule_id)
    if rule is None:
        raise NotFound("whitelist rule not found")
    server_ids = rule.server_ids
    session.delete(rule)
    session.flush()
    _forget_rules(session)
    _whitelist_changed(session, server_ids)
    audit.record(session, actor, "remove_alarm_whitelist", target_type="alarm_whitelist", target_id=rule_id)


def _whitelist_changed(session: Session, server_ids: list[str] | None) -> None:
    # Agents never isolate whitelisted files, so the rules are part of their policy bundle.
    from hostward.manager.malware.service import refresh_whitelist

    refresh_whitelist(session, server_ids)


def apply_rule(session: Session, rule_id: str, *, actor: str, now: datetime) -> int:
    """Retroactively handle open alarms the rule matches; returns how many."""
    found = session.get(AlarmWhitelistRule, rule_id)
    if found is None:
        raise NotFound("whitelist rule not found")
    rule = found
    stmt = select(Alarm).where(Alarm.status == "unhandled")
    if rule.event_class:
        stmt = stmt.where(Alarm.event_class == rule.event_class)
    if rule.server_ids is not None:
        stmt = stmt.where(Alarm.server_id.in_(rule.server_ids))
    count = 0
    touched = set()
    for alarm in session.scalars(stmt):
        if rule_matches(rule, alarm.server_id, alarm.event_class, alarm.evidence, now):
            alarm.status = "handled"
            alarm.handle_action = "whitelisted"
            alarm.handler = actor
            alarm.handled_at = now
            alarm.whitelist_rule_id = rule.id
            touched.add(alarm.server_id)
            count += 1
    rule.hits += count
    for sid in touched:
        server = session.get(Server, sid)
        if server is not None:
            refresh_server_risk(session, server)
    audit.record(
        session,
        actor,
        "apply_alarm_whitelist",
        target_type="alarm_whitelist",
        target_id=rule.id,
        matched=count,
    )
    return count


def purge_old(session: Session, now: datetime, retention_days: int) -> int:
    """Alarms are kept ``retention_days`` (30 by default) after their last occurrence."""
    cutoff = now - timedelta(days=retention_days)
    result = session.execute(delete(Alarm).where(Alarm.last_seen < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
