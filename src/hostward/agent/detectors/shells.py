"""Abnormal shell (``malware_0001``): shell binaries whose permissions, owner or links changed, and
copies of or links to a shell in odd places (temp dirs, home dirs, web roots).

Fed with ``shell_snapshot`` observations (``collectors.filemodes.collect_shells``). Attribute changes are
reported against the previous snapshot; copies, hard links and symlinks to a shell outside the system
directories are reported whenever they are first seen (also in the first snapshot: an attacker's copy
of bash in /dev/shm is suspicious whenever the agent finds it). Content changes of the shells
themselves are the FIM's business (package upgrades change them legitimately).
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.threatbase import PolicyGate, make_alarm
from hostward.wire import DetectorHealth, PolicyBundle

CODE = "malware_0001"
POLICY_KEY = "abnormal_shell"
SHELL_SNAPSHOT = "shell_snapshot"


@dataclass(frozen=True)
class ShellState:
    path: str
    mode: int
    uid: int
    gid: int
    nlink: int
    dev: int
    ino: int
    size: int
    sha256: str


@dataclass(frozen=True)
class ShellCopy:
    path: str
    kind: str  # copy | hardlink | symlink
    shell: str
    mode: int
    uid: int
    gid: int


@dataclass(frozen=True)
class ShellSnapshot:
    shells: dict[str, ShellState] = field(default_factory=dict)
    copies: dict[str, ShellCopy] = field(default_factory=dict)


def shell_changes(
    before: ShellSnapshot | None, after: ShellSnapshot
) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, change, evidence) for every abnormal change (pure)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if before is not None:
        for path, cur in sorted(after.shells.items()):
            old = before.shells.get(path)
            if old is None:
                continue
            if stat.S_IMODE(cur.mode) != stat.S_IMODE(old.mode):
                out.append(
                    (
                        path,
                        "permissions",
                        {
                            "old_mode": f"{stat.S_IMODE(old.mode):04o}",
                            "new_mode": f"{stat.S_IMODE(cur.mode):04o}",
                        },
                    )
                )
            if (cur.uid, cur.gid) != (old.uid, old.gid):
                out.append(
                    (
                        path,
                        "owner",
                        {"old_owner": f"{old.uid}:{old.gid}", "new_owner": f"{cur.uid}:{cur.gid}"},
                    )
                )
            if cur.nlink > old.nlink and (cur.dev, cur.ino) == (old.dev, old.ino):
                out.append((path, "hard_link_added", {"old_nlink": old.nlink, "new_nlink": cur.nlink}))
    seen = before.copies if before is not None else {}
    for path, copy in sorted(after.copies.items()):
        if path in seen and seen[path] == copy:
            continue
        out.append(
            (
                path,
                copy.kind,
                {
                    "shell": copy.shell,
                    "file_mode": f"{stat.S_IMODE(copy.mode):04o}",
                    "file_uid": copy.uid,
                    "file_gid": copy.gid,
                },
            )
        )
    return out


class AbnormalShellDetector:
    name = "abnormal_shell"
    inputs = frozenset({SHELL_SNAPSHOT})
    heavy = False

    def __init__(self, *, standalone: bool = False) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.previous: ShellSnapshot | None = None
        self.counters = {"snapshots": 0, "alarms": 0, "suppressed": 0, "shells": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        self.gate.apply(bundle)

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        current: ShellSnapshot = observation.data
        changes = shell_changes(self.previous, current)
        self.previous = current
        self.counters["snapshots"] += 1
        self.counters["shells"] = len(current.shells)
        events: list[DetectorEvent] = []
        for path, change, extra in changes:
            if not self.gate.alarming:
                self.counters["suppressed"] += 1
                continue
            state = current.shells.get(path)
            evidence: dict[str, Any] = {"file_path": path, "change": change, **extra}
            if state is not None:
                evidence.update(
                    {
                        "file_hash": state.sha256,
                        "file_mode": f"{stat.S_IMODE(state.mode):04o}",
                        "file_uid": state.uid,
                        "file_gid": state.gid,
                    }
                )
            self.counters["alarms"] += 1
            events.append(
                make_alarm(
                    CODE,
                    f"{CODE}:{path}:{change}",
                    f"Abnormal shell: {path} ({change.replace('_', ' ')})",
                    evidence,
                    now,
                )
            )
        return events

    def health(self) -> DetectorHealth:
        return self.gate.health(self.name, dict(self.counters))

    def stop(self) -> None:
        """Nothing to release."""
