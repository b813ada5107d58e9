"""Shared pieces of the malware/process threat detectors: policy gating, alarms, process whitelists.

Each detector reads its policy (``bundle.policies[key]``): it raises alarms only while protection is on
and its policy is enabled; without a bundle (tests, standalone use) it alarms with its defaults when
constructed with ``standalone=True``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hostward.agent.detectors.procmodel import ProcessInfo
from hostward.core.ids import new_id
from hostward.wire import AlarmEvent, DetectorHealth, PolicyBundle, alarm_class


def make_alarm(
    code: str,
    fingerprint: str,
    title: str,
    evidence: dict[str, Any],
    now: datetime,
    severity: str | None = None,
) -> AlarmEvent:
    return AlarmEvent(
        key=new_id(),
        occurred_at=now,
        event_class=code,
        severity=severity or alarm_class(code).severity,
        title=title[:512],
        fingerprint=fingerprint[:256],
        evidence=evidence,
    )


def process_evidence(info: ProcessInfo) -> dict[str, Any]:
    """Canonical process evidence keys (whitelists match on process_path / process_cmdline)."""
    return {
        "process_path": info.exe,
        "process_cmdline": info.cmdline_str[:4096],
        "pid": info.pid,
        "ppid": info.ppid,
        "ruid": info.ruid,
        "euid": info.euid,
        "cwd": info.cwd,
        "process_tree": info.tree(),
        "start_ticks": info.start_ticks,
    }


@dataclass(frozen=True)
class ProcessRule:
    """A whitelist entry: both regexes (when given) must match (``re.search``)."""

    process_path: re.Pattern[str] | None
    cmdline: re.Pattern[str] | None

    def matches(self, exe: str, cmdline: str) -> bool:
        if self.process_path is None and self.cmdline is None:
            return False
        if self.process_path is not None and not self.process_path.search(exe):
            return False
        return not (self.cmdline is not None and not self.cmdline.search(cmdline))


def parse_process_rules(items: Any, where: str) -> tuple[list[ProcessRule], list[str]]:
    """``[{"process_path": regex, "cmdline": regex}, ...]`` -> rules and error messages."""
    rules: list[ProcessRule] = []
    errors: list[str] = []
    if not isinstance(items, list):
        return rules, ([f"{where}: expected a list"] if items is not None else [])
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(f"{where}[{i}]: expected an object with process_path and/or cmdline")
            continue
        try:
            path = item.get("process_path")
            cmd = item.get("cmdline")
            rules.append(
                ProcessRule(re.compile(str(path)) if path else None, re.compile(str(cmd)) if cmd else None)
            )
        except re.error as exc:
            errors.append(f"{where}[{i}]: bad regex: {exc}")
    return rules, errors


class PolicyGate:
    """Whether a detector alarms, and its settings, from the policy bundle."""

    def __init__(self, key: str, *, standalone: bool) -> None:
        self.key = key
        self.standalone = standalone
        self.alarming = standalone
        self.settings: dict[str, Any] = {}
        self.errors: list[str] = []

    def apply(self, bundle: PolicyBundle | None) -> dict[str, Any]:
        if bundle is None:
            self.alarming = self.standalone
            self.settings = {}
            return self.settings
        policy = bundle.policies.get(self.key)
        self.alarming = bool(bundle.protection and (policy is None or policy.enabled))
        self.settings = dict(policy.settings) if policy is not None else {}
        return self.settings

    def health(self, name: str, counters: dict[str, int], degraded: str = "") -> DetectorHealth:
        if not self.alarming:
            return DetectorHealth(
                name=name, status="disabled", reason="protection or policy off", counters=counters
            )
        reason = "; ".join([*self.errors, degraded])[:1024].strip("; ")
        return DetectorHealth(
            name=name, status="degraded" if reason else "running", reason=reason, counters=counters
        )
