"""High-risk command (``procreport_0001``): executed command lines matching a keyword/regex list.

The default list is content (``content/process/high_risk_commands.yaml``, each pattern with samples):
netcat -e, /dev/tcp redirections, chmod 777 on system directories, rm -rf /, history wiping,
base64/downloads piped into a shell, downloads made executable in /tmp, log wiping, firewall or SELinux
off, uid-0 accounts, root SSH key injection, chattr +i on system files, /etc/ld.so.preload writes and
Python pty/socket one-liners.

Policy ``high_risk_command`` settings: ``patterns`` (extra: regex strings or
``{"id", "regex", "description"}``), ``disabled`` (ids of default patterns to skip), ``whitelist``
(``[{"process_path": regex, "cmdline": regex}]``: a process matching one is never reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.procmodel import PROCESS_EXEC, PROCESS_EXIT, ProcessExit, ProcessInfo
from hostward.agent.detectors.threatbase import (
    PolicyGate,
    ProcessRule,
    make_alarm,
    parse_process_rules,
    process_evidence,
)
from hostward.wire import DetectorHealth, PolicyBundle

CODE = "procreport_0001"
POLICY_KEY = "high_risk_command"
DEFAULT_PATTERNS_FILE = (
    Path(__file__).resolve().parents[2] / "content" / "process" / "high_risk_commands.yaml"
)
MAX_CMDLINE = 8192


@dataclass(frozen=True)
class CommandPattern:
    id: str
    description: str
    regex: re.Pattern[str]
    samples: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()


class PatternError(ValueError):
    pass


def load_patterns(path: Path = DEFAULT_PATTERNS_FILE) -> list[CommandPattern]:
    """The pattern file, validated (unique ids, compiling regexes); errors name the pattern."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    items = data.get("patterns") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PatternError(f"{path}: expected a 'patterns' list")
    out: list[CommandPattern] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{path}: patterns[{i}]"
        if not isinstance(item, dict) or not item.get("id") or not item.get("regex"):
            raise PatternError(f"{where}: needs id and regex")
        pid = str(item["id"])
        if pid in seen:
            raise PatternError(f"{where}: duplicate id {pid!r}")
        seen.add(pid)
        try:
            regex = re.compile(str(item["regex"]))
        except re.error as exc:
            raise PatternError(f"{where} ({pid}): bad regex: {exc}") from exc
        out.append(
            CommandPattern(
                pid,
                str(item.get("description", "")),
                regex,
                tuple(str(s) for s in item.get("samples") or ()),
                tuple(str(s) for s in item.get("negative") or ()),
            )
        )
    return out


def _extra_patterns(items: Any) -> tuple[list[CommandPattern], list[str]]:
    out: list[CommandPattern] = []
    errors: list[str] = []
    if not isinstance(items, list):
        return out, ([f"{POLICY_KEY}.patterns: expected a list"] if items is not None else [])
    for i, item in enumerate(items):
        if isinstance(item, str):
            pid, regex, desc = f"custom-{i}", item, "custom pattern"
        elif isinstance(item, dict) and item.get("regex"):
            pid = str(item.get("id") or f"custom-{i}")
            regex, desc = str(item["regex"]), str(item.get("description", "custom pattern"))
        else:
            errors.append(f"{POLICY_KEY}.patterns[{i}]: expected a regex or {{id, regex, description}}")
            continue
        try:
            out.append(CommandPattern(pid, desc, re.compile(regex)))
        except re.error as exc:
            errors.append(f"{POLICY_KEY}.patterns[{i}]: bad regex: {exc}")
    return out, errors


class HighRiskCommandDetector:
    name = "high_risk_command"
    inputs = frozenset({PROCESS_EXEC, PROCESS_EXIT})
    heavy = False

    def __init__(self, *, standalone: bool = False, patterns: list[CommandPattern] | None = None) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.defaults = patterns if patterns is not None else load_patterns()
        self.patterns = list(self.defaults)
        self.whitelist: list[ProcessRule] = []
        self._reported: set[tuple[int, int]] = set()
        self.counters = {"checked": 0, "alarms": 0, "whitelisted": 0, "suppressed": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        settings = self.gate.apply(bundle)
        disabled = {str(x) for x in settings.get("disabled") or [] if isinstance(x, str)}
        extra, errors = _extra_patterns(settings.get("patterns"))
        self.patterns = [p for p in self.defaults if p.id not in disabled] + extra
        self.whitelist, wl_errors = parse_process_rules(settings.get("whitelist"), f"{POLICY_KEY}.whitelist")
        self.gate.errors = errors + wl_errors

    def match(self, cmdline: str) -> list[CommandPattern]:
        text = cmdline[:MAX_CMDLINE]
        return [p for p in self.patterns if p.regex.search(text)]

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        if observation.kind == PROCESS_EXIT:
            data: ProcessExit = observation.data
            if self._reported:
                self._reported = {k for k in self._reported if k[0] != data.pid}
            return []
        info: ProcessInfo = observation.data
        if info.event in ("snapshot", "recheck", "uid"):
            return []  # only commands executed while we watch; a restart must not re-report old ones
        key = (info.pid, info.start_ticks)
        if key in self._reported:
            return []
        self.counters["checked"] += 1
        cmdline = info.cmdline_str
        hits = self.match(cmdline)
        if not hits:
            return []
        if any(rule.matches(info.exe, cmdline) for rule in self.whitelist):
            self.counters["whitelisted"] += 1
            return []
        self._reported.add(key)
        if len(self._reported) > 65536:
            self._reported = {key}
        if not self.gate.alarming:
            self.counters["suppressed"] += 1
            return []
        evidence = process_evidence(info)
        evidence["patterns"] = [p.id for p in hits]
        evidence["pattern_descriptions"] = {p.id: p.description for p in hits}
        first = hits[0]
        self.counters["alarms"] += 1
        return [
            make_alarm(
                CODE,
                f"{CODE}:{first.id}:{info.exe}",
                f"High-risk command ({first.description}): {cmdline[:200]}",
                evidence,
                now,
            )
        ]

    def health(self) -> DetectorHealth:
        counters = dict(self.counters)
        counters["patterns"] = len(self.patterns)
        return self.gate.health(self.name, counters)

    def stop(self) -> None:
        self._reported.clear()
