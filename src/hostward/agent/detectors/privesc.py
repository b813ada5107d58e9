"""Process privilege escalation (``procdet_0002``): a process that became root without a sanctioned path.

Raised for a process whose effective uid is 0 while its real uid is not 0 or its parent is not
privileged (effective uid != 0), unless the privilege came through a sanctioned setuid program:
the process runs one (``sudo``, ``su``, ``passwd``, ``pkexec``, ``newgrp``, ``chsh``, ``chfn``,
``gpasswd``, ``mount``, ``umount``, ``ping`` and other stock set-uid helpers), was one before an
in-place exec (``pkexec`` runs its target that way), or its parent is already privileged (the shell sudo
starts). A sanctioned name counts only in a system directory (``/usr/bin``, ``/usr/sbin``, ``/bin``,
``/sbin``, ``/usr/lib*``, ``/usr/libexec``): a copy of ``sudo`` in /tmp is not sanctioned.

Policy ``process_privilege_escalation`` settings: ``sanctioned`` (extra names or absolute paths),
``sanctioned_replace`` (bool: the extra list replaces the defaults), ``whitelist`` (process rules).
"""

from __future__ import annotations

import os
from datetime import datetime

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

CODE = "procdet_0002"
POLICY_KEY = "process_privilege_escalation"
DEFAULT_SANCTIONED = frozenset(
    {
        "sudo",
        "sudoedit",
        "su",
        "passwd",
        "pkexec",
        "newgrp",
        "sg",
        "chsh",
        "chfn",
        "gpasswd",
        "mount",
        "umount",
        "ping",
        "ping6",
        "chage",
        "expiry",
        "crontab",
        "at",
        "fusermount",
        "fusermount3",
        "ssh-keysign",
        "dbus-daemon-launch-helper",
        "polkit-agent-helper-1",
        "unix_chkpwd",
        "Xorg.wrap",
        "ntfs-3g",
        "pppd",
        "doas",
        "mount.nfs",
        "mount.cifs",
        "userhelper",
        "suexec",
        "staprun",
        "traceroute6.iputils",
        "snap-confine",
        "vmware-user-suid-wrapper",
        "spice-client-glib-usb-acl-helper",
        "newuidmap",
        "newgidmap",
        "exim4",
        "exim",
        "sendmail",
        "procmail",
        "ksu",
    }
)
TRUSTED_DIRS = (
    "/usr/bin",
    "/usr/sbin",
    "/bin",
    "/sbin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/libexec",
    "/lib",
    "/lib64",
)


def _trusted_dir(path: str) -> bool:
    d = os.path.dirname(path)
    return any(d == t or d.startswith(t + "/") for t in TRUSTED_DIRS)


class PrivilegeEscalationDetector:
    name = "process_privilege_escalation"
    inputs = frozenset({PROCESS_EXEC, PROCESS_UID, PROCESS_EXIT})
    heavy = False

    def __init__(self, *, standalone: bool = False) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.sanctioned_names: set[str] = set(DEFAULT_SANCTIONED)
        self.sanctioned_paths: set[str] = set()
        self.whitelist: list[ProcessRule] = []
        self._reported: set[tuple[int, int]] = set()
        self.counters = {"checked": 0, "alarms": 0, "whitelisted": 0, "suppressed": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        settings = self.gate.apply(bundle)
        extra = [str(x) for x in settings.get("sanctioned") or [] if isinstance(x, str)]
        names = set() if settings.get("sanctioned_replace") else set(DEFAULT_SANCTIONED)
        self.sanctioned_names = names | {x for x in extra if "/" not in x}
        self.sanctioned_paths = {x for x in extra if x.startswith("/")}
        self.whitelist, self.gate.errors = parse_process_rules(
            settings.get("whitelist"), f"{POLICY_KEY}.whitelist"
        )

    def sanctioned(self, exe: str) -> bool:
        if not exe:
            return False
        exe = exe.removesuffix(" (deleted)")
        if exe in self.sanctioned_paths:
            return True
        return os.path.basename(exe) in self.sanctioned_names and _trusted_dir(exe)

    def escalated(self, info: ProcessInfo) -> str | None:
        """Why ``info`` is an unsanctioned escalation, or None (pure)."""
        if info.euid != 0:
            return None
        parent = info.parent
        parent_privileged = parent is not None and parent.euid == 0
        if parent_privileged:
            return None  # inherited from a privileged parent (sudo's child shell, daemons)
        if info.ruid == 0 and parent is None:
            return None  # parent unknown (gone): only the real/effective mismatch is evidence then
        if self.sanctioned(info.exe) or self.sanctioned(info.previous_exe):
            return None
        if info.ruid != 0:
            return f"effective uid 0 with real uid {info.ruid}"
        return f"root process whose parent runs as uid {parent.euid if parent else '?'}"

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        if observation.kind == PROCESS_EXIT:
            data: ProcessExit = observation.data
            if self._reported:
                self._reported = {k for k in self._reported if k[0] != data.pid}
            return []
        info: ProcessInfo = observation.data
        self.counters["checked"] += 1
        key = (info.pid, info.start_ticks)
        if key in self._reported:
            return []
        reason = self.escalated(info)
        if reason is None:
            return []
        if any(rule.matches(info.exe, info.cmdline_str) for rule in self.whitelist):
            self.counters["whitelisted"] += 1
            return []
        self._reported.add(key)
        if len(self._reported) > 65536:
            self._reported = {key}
        if not self.gate.alarming:
            self.counters["suppressed"] += 1
            return []
        evidence = process_evidence(info)
        evidence["reason"] = reason
        evidence["parent_euid"] = info.parent.euid if info.parent else None
        evidence["previous_exe"] = info.previous_exe
        self.counters["alarms"] += 1
        return [
            make_alarm(
                CODE,
                f"{CODE}:{info.exe}:{info.ruid}",
                f"Process privilege escalation: {info.name} (pid {info.pid}) runs as root ({reason})",
                evidence,
                now,
            )
        ]

    def health(self) -> DetectorHealth:
        return self.gate.health(self.name, dict(self.counters))

    def stop(self) -> None:
        self._reported.clear()
