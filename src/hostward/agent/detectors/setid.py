"""File privilege escalation (``fileprotect_0001``): new set-uid / set-gid files.

Fed with ``setid_files`` snapshots (``collectors.filemodes.collect_setid``: every set-uid/set-gid
regular file under the watched directories). The first snapshot is the baseline; later ones raise an
alarm for each file that is new, gained a set-id bit, or was replaced (other inode or content) while
keeping one. Policy ``file_privilege_escalation`` settings: ``dirs`` (the runtime passes them to the
collector), ``whitelist`` (list of path regexes).
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.threatbase import PolicyGate, make_alarm
from hostward.wire import DetectorHealth, PolicyBundle

CODE = "fileprotect_0001"
POLICY_KEY = "file_privilege_escalation"
SETID_FILES = "setid_files"


@dataclass(frozen=True)
class SetidEntry:
    path: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    dev: int
    ino: int
    sha256: str = ""

    @property
    def bits(self) -> int:
        return self.mode & (stat.S_ISUID | stat.S_ISGID)


def describe_bits(bits: int) -> str:
    names = []
    if bits & stat.S_ISUID:
        names.append("setuid")
    if bits & stat.S_ISGID:
        names.append("setgid")
    return "+".join(names) or "none"


def diff_setid(before: dict[str, SetidEntry], after: dict[str, SetidEntry]) -> list[tuple[SetidEntry, str]]:
    """(entry, change) for new / bits_added / replaced set-id files (pure)."""
    out: list[tuple[SetidEntry, str]] = []
    for path, cur in sorted(after.items()):
        old = before.get(path)
        if old is None:
            out.append((cur, "new"))
        elif cur.bits & ~old.bits:
            out.append((cur, "bits_added"))
        elif cur.ino != old.ino or (cur.sha256 and old.sha256 and cur.sha256 != old.sha256):
            # not the device number: it may differ after a reboot (the baseline is kept across restarts)
            out.append((cur, "replaced"))
    return out


class FilePrivilegeEscalationDetector:
    name = "file_privilege_escalation"
    inputs = frozenset({SETID_FILES})
    heavy = False

    def __init__(self, *, standalone: bool = False) -> None:
        self.gate = PolicyGate(POLICY_KEY, standalone=standalone)
        self.baseline: dict[str, SetidEntry] | None = None
        self.whitelist: list[re.Pattern[str]] = []
        self.counters = {"snapshots": 0, "alarms": 0, "whitelisted": 0, "suppressed": 0, "files": 0}

    def prime(self, baseline: dict[str, SetidEntry] | None) -> None:
        self.baseline = dict(baseline) if baseline is not None else None

    def configure(self, bundle: PolicyBundle | None) -> None:
        settings = self.gate.apply(bundle)
        self.whitelist, self.gate.errors = [], []
        for i, item in enumerate(settings.get("whitelist") or []):
            try:
                self.whitelist.append(re.compile(str(item)))
            except re.error as exc:
                self.gate.errors.append(f"{POLICY_KEY}.whitelist[{i}]: bad regex: {exc}")

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        current: dict[str, SetidEntry] = dict(observation.data)
        previous, self.baseline = self.baseline, current
        self.counters["snapshots"] += 1
        self.counters["files"] = len(current)
        if previous is None:
            return []
        events: list[DetectorEvent] = []
        for entry, change in diff_setid(previous, current):
            if any(p.search(entry.path) for p in self.whitelist):
                self.counters["whitelisted"] += 1
                continue
            if not self.gate.alarming:
                self.counters["suppressed"] += 1
                continue
            evidence: dict[str, Any] = {
                "file_path": entry.path,
                "file_mode": f"{stat.S_IMODE(entry.mode):04o}",
                "file_uid": entry.uid,
                "file_gid": entry.gid,
                "file_size": entry.size,
                "setid": describe_bits(entry.bits),
                "change": change,
            }
            if entry.sha256:
                evidence["file_hash"] = entry.sha256
            self.counters["alarms"] += 1
            events.append(
                make_alarm(
                    CODE,
                    f"{CODE}:{entry.path}:{stat.S_IMODE(entry.mode):o}:{entry.ino}",
                    f"File privilege escalation: {entry.path} is {describe_bits(entry.bits)} "
                    f"(owner uid {entry.uid}, {change})",
                    evidence,
                    now,
                )
            )
        return events

    def health(self) -> DetectorHealth:
        return self.gate.health(self.name, dict(self.counters))

    def stop(self) -> None:
        """Nothing to release: the owner persists the baseline (``agent.threatstate``)."""
