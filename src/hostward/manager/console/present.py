"""How values look in the console: status labels with badge colours, times, sizes (Jinja filters)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from markupsafe import Markup, escape

from hostward.core.clock import as_utc, utcnow
from hostward.wire.alarms import ALARM_CLASSES

# (label, badge colour) per value; colours are CSS classes b-green, b-red, b-amber, b-grey, b-blue.
STATUS: dict[str, dict[str, tuple[str, str]]] = {
    "agent_status": {
        "online": ("Online", "green"),
        "offline": ("Offline", "red"),
        "not_installed": ("Not installed", "grey"),
    },
    "protection_status": {
        "opened": ("Protected", "green"),
        "closed": ("Unprotected", "grey"),
        "protection_exception": ("Protection interrupted", "amber"),
    },
    "scan_result": {
        "clean": ("Safe", "green"),
        "risk": ("Risky", "red"),
        "undetected": ("Pending", "grey"),
        "scanning": ("Scanning", "blue"),
    },
    "edition": {
        "basic": ("Basic", "grey"),
        "enterprise": ("Enterprise", "blue"),
        "premium": ("Premium", "violet"),
        "wtp": ("WTP", "violet"),
    },
    "quota_status": {
        "normal": ("Normal", "green"),
        "expired": ("Expired (grace)", "amber"),
        "frozen": ("Frozen", "red"),
    },
    "usage": {"idle": ("Idle", "grey"), "used": ("In use", "blue")},
    "severity": {
        "critical": ("Critical", "red"),
        "high": ("High", "orange"),
        "medium": ("Medium", "amber"),
        "low": ("Low", "grey"),
    },
    "alarm_status": {"unhandled": ("Unhandled", "red"), "handled": ("Handled", "green")},
    "handle_action": {
        "mark_as_handled": ("Marked handled", "green"),
        "ignore": ("Ignored", "grey"),
        "add_to_alarm_whitelist": ("Whitelisted", "blue"),
        "whitelisted": ("Whitelisted (rule)", "blue"),
        "isolate_and_kill": ("Isolated and killed", "violet"),
    },
    "isolated_state": {
        "isolating": ("Being isolated", "amber"),
        "isolated": ("Isolated", "red"),
        "restored": ("Restored", "green"),
        "deleted": ("Deleted", "grey"),
    },
    "scan_status": {
        "queued": ("Queued", "grey"),
        "running": ("Running", "blue"),
        "succeeded": ("Succeeded", "green"),
        "failed": ("Failed", "red"),
        "timed_out": ("Timed out", "red"),
        "cancelled": ("Cancelled", "grey"),
    },
    "scan_trigger": {
        "enable": ("On enable", "grey"),
        "schedule": ("Daily", "grey"),
        "manual": ("Manual", "grey"),
    },
    "token_status": {
        "active": ("Active", "green"),
        "revoked": ("Revoked", "grey"),
        "expired": ("Expired", "grey"),
        "used_up": ("Used up", "grey"),
    },
    "credential_status": {"active": ("Active", "green"), "revoked": ("Revoked", "grey")},
    "detector_status": {
        "running": ("Running", "green"),
        "degraded": ("Degraded", "amber"),
        "failed": ("Failed", "red"),
        "disabled": ("Disabled", "grey"),
    },
    "switch": {"on": ("On", "green"), "off": ("Off", "grey")},
    "importance": {
        "important": ("Important", "red"),
        "common": ("General", "grey"),
        "test": ("Test", "grey"),
    },
}

ATTACK_PHASES = {
    "reconnaissance": "Reconnaissance",
    "initial_access": "Initial access",
    "execution": "Execution",
    "persistence": "Persistence",
    "privilege_escalation": "Privilege escalation",
    "defense_evasion": "Defense evasion",
    "credential_access": "Credential access",
    "command_and_control": "Command and control",
    "impact": "Impact",
}

SCAN_KIND_LABELS = {
    "full": "Comprehensive detection",
    "asset": "Asset collection",
    "vulnerability": "Vulnerabilities",
    "baseline": "Baseline checks",
    "weak_password": "Weak passwords",
    "malware": "Virus scan (quick)",
    "malware_full": "Virus scan (full disk)",
    "malware_custom": "Virus scan (custom paths)",
    "webshell": "Webshell scan",
    "fim": "File integrity check",
}

ACTION_LABELS = {
    "mark_as_handled": "Mark as handled",
    "ignore": "Ignore",
    "add_to_alarm_whitelist": "Add to alarm whitelist",
    "unhandle": "Cancel handled mark",
    "do_not_ignore": "Stop ignoring",
    "remove_from_alarm_whitelist": "Remove from alarm whitelist",
    "isolate_and_kill": "Isolate and kill",
}


def label(value: Any, kind: str) -> str:
    if value is None or value == "":
        return "—"
    entry = STATUS.get(kind, {}).get(str(value))
    return entry[0] if entry else str(value).replace("_", " ").capitalize()


def badge(value: Any, kind: str, title: str = "") -> Markup:
    """A coloured status pill; ``title`` (escaped) shows on hover, e.g. why protection is interrupted."""
    if value is None or value == "":
        return Markup('<span class="muted">—</span>')
    text, colour = STATUS.get(kind, {}).get(str(value), (label(value, kind), "grey"))
    hover = f' title="{escape(title)}"' if title else ""
    return Markup(
        f'<span class="badge b-{colour}" data-status="{escape(value)}"{hover}>{escape(text)}</span>'
    )


def options(values: Any, kind: str) -> list[tuple[str, str]]:
    """(value, label) pairs for a <select>."""
    return [(str(v), label(v, kind)) for v in values]


def fmt_dt(value: datetime | None) -> str:
    if value is None:
        return "—"
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S")


def fmt_date(value: datetime | None) -> str:
    if value is None:
        return "Never"
    return as_utc(value).strftime("%Y-%m-%d")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    if value is None:
        return "never"
    seconds = int(((now or utcnow()) - as_utc(value)).total_seconds())
    if seconds < 0:
        return "just now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def fmt_bytes(value: int | None) -> str:
    if not value:
        return "0 B"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def phase_label(value: str | None) -> str:
    return ATTACK_PHASES.get(value or "", (value or "—").replace("_", " "))


def class_name(code: str | None) -> str:
    cls = ALARM_CLASSES.get(code or "")
    return cls.name if cls else (code or "—")


def install(env: jinja2.Environment) -> None:
    env.filters.update(
        label=label,
        options=options,
        badge=badge,
        dt=fmt_dt,
        date=fmt_date,
        ago=ago,
        bytes=fmt_bytes,
        phase=phase_label,
        class_name=class_name,
    )
    env.globals.update(
        STATUS=STATUS,
        ATTACK_PHASES=ATTACK_PHASES,
        SCAN_KIND_LABELS=SCAN_KIND_LABELS,
        ACTION_LABELS=ACTION_LABELS,
        ALARM_CLASSES=ALARM_CLASSES,
    )
