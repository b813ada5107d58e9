"""Notifications: what is sent (real-time alarm and auto-blocking notices, the daily summary), queued as
``notify_send`` jobs (one per channel, retried with backoff by the scheduler), and sent by the job.

Jobs carry the message, not the channel configuration: the SMTP password and webhook secret are read
when the job runs and never stored in job rows.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hostward.manager.alarms.models import Alarm
from hostward.manager.notify import channels
from hostward.manager.notify.settings import NotificationSettings, load, load_state, save_state
from hostward.manager.scheduler import jobs
from hostward.manager.scheduler.models import Job
from hostward.manager.scheduler.registry import JobRun
from hostward.manager.servers.models import Server
from hostward.wire.alarms import SEVERITIES

JOB_KIND = "notify_send"
CHANNELS = ("email", "webhook")


def alarm_message(alarm: Alarm, server: Server | None) -> dict[str, Any]:
    return {
        "type": "alarm",
        "alarm": {
            "id": alarm.id,
            "event_class": alarm.event_class,
            "name": alarm.name,
            "category": alarm.category,
            "severity": alarm.severity,
            "attack_phase": alarm.attack_phase,
            "title": alarm.title,
            "first_seen": alarm.first_seen.isoformat(),
            "server_id": alarm.server_id,
            "server_name": server.name if server else "",
            "server_ips": list(server.ips) if server else [],
        },
    }


def blocking_message(block: Any, server: Server | None) -> dict[str, Any]:
    return {
        "type": "auto_blocking",
        "block": {
            "id": block.id,
            "action": "block_ip",
            "source": block.source,
            "service": block.service,
            "times_blocked": block.times_blocked,
            "reason": block.reason,
            "blocked_at": block.latest_blocked_at.isoformat() if block.latest_blocked_at else None,
            "expires_at": block.expires_at.isoformat() if block.expires_at else None,
            "server_id": block.server_id,
            "server_name": server.name if server else "",
        },
    }


def enqueue(session: Session, settings: NotificationSettings, message: dict[str, Any], dedup: str) -> int:
    """One ``notify_send`` job per enabled channel (deduplicated by ``dedup``); returns how many."""
    queued = 0
    for channel in settings.channels:
        jobs.enqueue(
            session, JOB_KIND, {"channel": channel, "message": message}, dedup_key=f"{dedup}:{channel}"
        )
        queued += 1
    return queued


def render(message: dict[str, Any]) -> tuple[str, str]:
    """E-mail subject and plain text for a message."""
    kind = message.get("type")
    if kind == "alarm":
        a = message["alarm"]
        subject = f"[hostward] {a['severity'].capitalize()} alarm on {a['server_name']}: {a['title']}"
        lines = [
            f"Alarm: {a['name']} ({a['event_class']})",
            f"Severity: {a['severity']}",
            f"Server: {a['server_name']} {' '.join(a.get('server_ips') or [])}".rstrip(),
            f"Detected: {a['first_seen']}",
            f"Details: {a['title']}",
            f"ATT&CK phase: {a['attack_phase']}",
            "",
            "Handle it in the console: Intrusion Detection -> Alarms.",
        ]
        return subject[:250], "\n".join(lines) + "\n"
    if kind == "auto_blocking":
        b = message["block"]
        subject = f"[hostward] Blocked {b['source']} ({b['service']}) on {b['server_name']}"
        lines = [
            f"Automatic blocking: {b['source']} was blocked for {b['service']} on {b['server_name']}.",
            f"Reason: {b['reason'] or 'brute force'}",
            f"Times blocked: {b['times_blocked']}",
            f"Blocked at: {b['blocked_at']}",
            f"Until: {b['expires_at'] or 'unblocked by hand'}",
        ]
        return subject[:250], "\n".join(lines) + "\n"
    if kind == "daily_summary":
        return render_daily(message)
    if kind == "test":
        return "[hostward] Test notification", "This is a test notification from hostward.\n"
    return "[hostward] Notification", str(message) + "\n"


def render_daily(message: dict[str, Any]) -> tuple[str, str]:
    alarms = message["alarms"]
    vulns = message["vulnerabilities"]
    base = message["baseline"]
    servers = message["servers"]
    subject = (
        f"[hostward] Daily summary {message['date']}: score {message['security_score']}, "
        f"{alarms['new']} new alarm(s), {vulns['critical']} critical vulnerabilit(y/ies)"
    )
    lines = [
        f"hostward daily summary for {message['date']} (period {message['from']} to {message['to']})",
        "",
        f"Security score: {message['security_score']} / 100",
        f"Servers: {servers['total']} ({servers['unprotected']} unprotected, {servers['offline']} offline, "
        f"{servers['not_installed']} without agent)",
        f"Vulnerabilities: {vulns['unfixed']} unfixed ({vulns['critical']} critical, {vulns['high']} high)",
        f"Unsafe configurations: {base['failed']}; weak passwords: {base['weak_passwords']}",
        f"Alarms in the period: {alarms['new']} ({alarms['unhandled']} unhandled in total)",
    ]
    for sev in SEVERITIES:
        if alarms["by_severity"].get(sev):
            lines.append(f"  {sev}: {alarms['by_severity'][sev]}")
    if alarms["by_class"]:
        lines.append("By type:")
        lines += [f"  {name}: {count}" for name, count in alarms["by_class"].items()]
    lines.append(f"Automatic blocks in the period: {message['auto_blocking']}")
    return subject[:250], "\n".join(lines) + "\n"


def deliver(session: Session, channel: str, message: dict[str, Any], delivery_id: str) -> str:
    """Send ``message`` on ``channel`` with the current settings; DeliveryFailed on failure.

    A test message goes out even while the channel is switched off (to try it before turning it on).
    """
    settings = load(session)
    if channel not in settings.channels and message.get("type") != "test":
        return f"{channel} disabled; dropped"
    if channel == "email":
        subject, text = render(message)
        channels.send_email(settings.email, subject, text)
        return f"e-mail sent to {len(settings.email.recipients)} recipient(s)"
    status = channels.send_webhook(settings.webhook, message, delivery_id=delivery_id)
    return f"webhook answered {status}"


def queue_test(session: Session, channel: str, *, actor: str, now: datetime) -> str:
    """Queue a test message on ``channel``; returns the job id (its outcome shows in the deliveries)."""
    message = {"type": "test", "requested_by": actor, "at": now.isoformat()}
    return jobs.enqueue(session, JOB_KIND, {"channel": channel, "message": message}).id


def recent_deliveries(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The latest notification jobs: channel, what, status, attempts and the last error."""
    rows = session.scalars(
        select(Job).where(Job.kind == JOB_KIND).order_by(Job.created_at.desc()).limit(limit)
    )
    out = []
    for job in rows:
        message = job.payload.get("message") if isinstance(job.payload, dict) else None
        out.append(
            {
                "id": job.id,
                "channel": str(job.payload.get("channel", "")),
                "type": str(message.get("type", "")) if isinstance(message, dict) else "",
                "status": job.status,
                "attempts": job.attempts,
                "last_error": job.last_error,
                "created_at": job.created_at,
                "next_attempt_at": job.run_at if job.status == "pending" else None,
                "finished_at": job.finished_at,
            }
        )
    return out


def run_job(session: Session, run: JobRun) -> object:
    """The ``notify_send`` job: raising makes the scheduler retry with backoff."""
    channel = str(run.payload.get("channel", ""))
    message = run.payload.get("message")
    if channel not in CHANNELS or not isinstance(message, dict):
        return "invalid job payload; dropped"
    return deliver(session, channel, message, run.id)


# ---- daily summary --------------------------------------------------------------------------------------


def daily_summary(session: Session, now: datetime, settings: NotificationSettings) -> dict[str, Any]:
    """What the last 24 hours brought, and what is open now (masked classes and severities left out)."""
    from hostward.manager.baseline.models import BaselineCheckResult, WeakPassword
    from hostward.manager.loginsec.models import BlockedIp
    from hostward.manager.risk.score import compute
    from hostward.manager.vulns.models import VulnFinding
    from hostward.wire.alarms import ALARM_CLASSES

    since = now - timedelta(days=1)
    wanted = [
        Alarm.severity.in_(settings.severities),
        Alarm.event_class.not_in(settings.masked_event_classes or ["-"]),
    ]
    new = select(Alarm.severity, Alarm.event_class, func.count()).where(Alarm.first_seen >= since, *wanted)
    by_severity: dict[str, int] = {}
    by_class: dict[str, int] = {}
    for severity, event_class, n in session.execute(new.group_by(Alarm.severity, Alarm.event_class)):
        by_severity[severity] = by_severity.get(severity, 0) + int(n)
        name = ALARM_CLASSES[event_class].name if event_class in ALARM_CLASSES else event_class
        by_class[name] = by_class.get(name, 0) + int(n)

    def count(*where: Any) -> int:
        return int(session.scalar(select(func.count()).where(*where)) or 0)

    vulns = dict(
        session.execute(
            select(VulnFinding.severity, func.count())
            .where(VulnFinding.status == "unfixed")
            .group_by(VulnFinding.severity)
        ).all()
    )
    local = now.astimezone(ZoneInfo(settings.timezone))
    return {
        "type": "daily_summary",
        "date": local.date().isoformat(),
        "from": since.isoformat(),
        "to": now.isoformat(),
        "security_score": compute(session, now)["score"],
        "servers": {
            "total": count(Server.id.is_not(None)),
            "unprotected": count(Server.protection_status == "closed"),
            "offline": count(Server.agent_status == "offline"),
            "not_installed": count(Server.agent_status == "not_installed"),
        },
        "vulnerabilities": {
            "unfixed": int(sum(vulns.values())),
            "critical": int(vulns.get("critical", 0)),
            "high": int(vulns.get("high", 0)),
        },
        "baseline": {
            "failed": count(BaselineCheckResult.result == "failed", BaselineCheckResult.ignored.is_(False)),
            "weak_passwords": count(WeakPassword.id.is_not(None)),
        },
        "alarms": {
            "new": sum(by_severity.values()),
            "by_severity": by_severity,
            "by_class": dict(sorted(by_class.items(), key=lambda kv: -kv[1])),
            "unhandled": count(Alarm.status == "unhandled", *wanted),
        },
        "auto_blocking": count(BlockedIp.latest_blocked_at >= since),
    }


def plan_daily(session: Session, now: datetime) -> dict[str, Any]:
    """At ``daily_time`` (in ``timezone``) queue today's summary once; a manager that was down at that
    time sends it when it is back, the same day."""
    settings = load(session)
    if not settings.daily_enabled or not settings.channels:
        return {"queued": 0}
    local = now.astimezone(ZoneInfo(settings.timezone))
    hour, minute = (int(x) for x in settings.daily_time.split(":"))
    if local.time() < time(hour, minute):
        return {"queued": 0}
    state = load_state(session)
    today = local.date().isoformat()
    if state.get("last_daily") == today:
        return {"queued": 0}
    message = daily_summary(session, now, settings)
    queued = enqueue(session, settings, message, f"daily:{today}")
    state["last_daily"] = today
    save_state(session, state, now)
    return {"queued": queued, "date": today}
