"""Suspicious crontab task (``crontab_1001``): cron entries that download and execute, or run programs
from world-writable temp directories (/tmp, /var/tmp, /dev/shm), or open reverse shells.

Fed with ``cron_entries`` observations (``collectors.crontab.read_cron_entries``). The first
collection reports the suspicious entries already present (persistence installed before the agent is
still persistence); later collections report suspicious entries that are new. Policy ``crontab_check``
settings: ``whitelist`` (list of command regexes).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.threatbase import PolicyGate, make_alarm
from hostward.wire import DetectorHealth, PolicyBundle

CODE = "crontab_1001"
POLICY_KEY = "crontab_check"
CRON_ENTRIES = "cron_entries"

_INTERP = r"(sudo\s+)?(\S*/)?((ba|da|z|k)?sh|python[0-9.]*|perl|ruby|php)\b"
SUSPICIOUS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("download_pipe_exec", re.compile(r"\b(curl|wget|fetch)\b[^|;&]*\|\s*" + _INTERP)),
    (
        "download_then_exec",
        re.compile(
            r"\b(curl|wget)\b.*(&&|;|\|\|)\s*(chmod\s+[+0-7]*x|(ba|da|z)?sh\s|\./|(/var)?/tmp/|/dev/shm/)"
        ),
    ),
    ("download_substitution", re.compile(r"(\$\(|`)\s*(curl|wget)\b")),
    ("python_download", re.compile(r"\bpython[0-9.]*\s+-c\s+.*\b(urllib|requests|urlopen)\b")),
    ("base64_exec", re.compile(r"\bbase64\s+(-d|--decode)\b.*\|\s*" + _INTERP)),
    ("reverse_shell", re.compile(r"/dev/(tcp|udp)/[^/\s]+/\d+|\b(nc|ncat)\b.*\s-[a-z]*e\s")),
    (
        "runs_from_tmp",
        re.compile(
            r"(^|[;&|(]\s*|\b(sh|bash|nohup|exec|python[0-9.]*|perl|setsid)\s+)(/var/tmp|/tmp|/dev/shm)/\S+"
        ),
    ),
)


@dataclass(frozen=True)
class CronEntry:
    source: str
    line: int
    user: str
    schedule: str
    command: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.source, self.user, self.schedule, self.command)


def suspicious_reasons(command: str) -> list[str]:
    return [name for name, regex in SUSPICIOUS if regex.search(command)]


class SuspiciousCrontabDetector:
    name = "crontab_check"
    inputs = frozenset({CRON_ENTRIES})
    heavy = False

    def __init__(self, *, standalone: bool = False) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.known: set[tuple[str, str, str, str]] | None = None
        self.whitelist: list[re.Pattern[str]] = []
        self.counters = {"collections": 0, "entries": 0, "alarms": 0, "whitelisted": 0, "suppressed": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        settings = self.gate.apply(bundle)
        self.whitelist, self.gate.errors = [], []
        for i, item in enumerate(settings.get("whitelist") or []):
            try:
                self.whitelist.append(re.compile(str(item)))
            except re.error as exc:
                self.gate.errors.append(f"{POLICY_KEY}.whitelist[{i}]: bad regex: {exc}")

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        entries: list[CronEntry] = list(observation.data)
        known = self.known
        self.known = {e.key for e in entries}
        self.counters["collections"] += 1
        self.counters["entries"] = len(entries)
        events: list[DetectorEvent] = []
        for entry in entries:
            if known is not None and entry.key in known:
                continue
            reasons = suspicious_reasons(entry.command)
            if not reasons:
                continue
            if any(p.search(entry.command) for p in self.whitelist):
                self.counters["whitelisted"] += 1
                continue
            if not self.gate.alarming:
                self.counters["suppressed"] += 1
                continue
            digest = hashlib.sha256(entry.command.encode()).hexdigest()[:16]
            self.counters["alarms"] += 1
            events.append(
                make_alarm(
                    CODE,
                    f"{CODE}:{entry.source}:{entry.user}:{digest}",
                    f"Suspicious crontab task ({', '.join(reasons)}) for {entry.user}: {entry.command[:200]}",
                    {
                        "file_path": entry.source,
                        "line": entry.line,
                        "username": entry.user,
                        "schedule": entry.schedule,
                        "process_cmdline": entry.command[:4096],
                        "reasons": reasons,
                    },
                    now,
                )
            )
        return events

    def health(self) -> DetectorHealth:
        return self.gate.health(self.name, dict(self.counters))

    def stop(self) -> None:
        """Nothing to release."""
