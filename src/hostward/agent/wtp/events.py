"""Tamper records and their ``wtp_0001`` alarms, plus the fanotify writer cache both engines share."""

from __future__ import annotations

import os
import time
from datetime import datetime
from typing import Any

from hostward.agent.fim import inotify as ino
from hostward.agent.fim.fanotify import FanEvent, Writer, describe_process
from hostward.core.ids import new_id
from hostward.wire.alarms import alarm_class
from hostward.wire.protocol import AlarmEvent

WTP_TAMPER = "wtp_0001"
WRITER_TTL_S = 5.0
WATCH_MASK = (
    ino.IN_MODIFY
    | ino.IN_CLOSE_WRITE
    | ino.IN_ATTRIB
    | ino.IN_CREATE
    | ino.IN_DELETE
    | ino.IN_MOVED_FROM
    | ino.IN_MOVED_TO
    | ino.IN_DELETE_SELF
    | ino.IN_ONLYDIR
    | ino.IN_DONT_FOLLOW
    | ino.IN_EXCL_UNLINK
)


def tamper_action(mask: int) -> str:
    """The tamper action an inotify mask stands for."""
    if mask & (ino.IN_DELETE | ino.IN_DELETE_SELF):
        return "deleted"
    if mask & ino.IN_MOVED_FROM:
        return "renamed"
    if mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
        return "created"
    if mask & (ino.IN_MODIFY | ino.IN_CLOSE_WRITE):
        return "modified"
    return "attributes"


def process_dict(writer: Writer | None) -> dict[str, Any] | None:
    if writer is None:
        return None
    return {
        "pid": writer.pid,
        "exe": writer.exe,
        "uid": writer.uid,
        "user": writer.user,
        "cmdline": writer.cmdline,
    }


def ancestor_pids(pid: int, proc: str = "/proc", limit: int = 64) -> tuple[int, ...]:
    """The parent, grandparent, ... of ``pid`` (up to init), as far as /proc still knows them."""
    out: list[int] = []
    for _ in range(limit):
        try:
            with open(f"{proc}/{pid}/stat", "rb") as f:
                data = f.read()
            pid = int(data[data.rindex(b")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        out.append(pid)
    return tuple(out)


class WriterCache:
    """path → the last process fanotify saw writing it (described at once, before it can exit).

    ``lineage(pid)``: the writer's ancestors, read at the same moment (a privileged session trusts the
    processes its ``wtp exec`` started, even when they have exited by the time the write is judged)."""

    def __init__(self, ttl_s: float = WRITER_TTL_S, self_pid: int | None = None) -> None:
        self.ttl_s = ttl_s
        self.self_pid = self_pid or os.getpid()
        self._by_path: dict[str, tuple[Writer, float]] = {}
        self._lineage: dict[int, tuple[int, ...]] = {}
        self.track_lineage = False

    def lineage(self, pid: int) -> tuple[int, ...]:
        return self._lineage.get(pid) or ancestor_pids(pid)

    def feed(self, events: list[FanEvent]) -> list[tuple[str, Writer]]:
        now = time.monotonic()
        seen: list[tuple[str, Writer]] = []
        described: dict[int, Writer] = {}
        for ev in events:
            if ev.path is None or ev.pid == self.self_pid:
                continue
            path = os.fsdecode(ev.path).removesuffix(" (deleted)")
            writer = described.get(ev.pid)
            if writer is None:
                writer = described[ev.pid] = describe_process(ev.pid)
                if self.track_lineage:
                    self._lineage[ev.pid] = ancestor_pids(ev.pid)
            self._by_path[path] = (writer, now)
            seen.append((path, writer))
        if len(self._by_path) > 4096:
            self._by_path = {p: v for p, v in self._by_path.items() if now - v[1] < self.ttl_s}
        if len(self._lineage) > 4096:
            self._lineage = {}
        return seen

    def forget(self, path: str) -> None:
        self._by_path.pop(path, None)

    def get(self, path: str) -> Writer | None:
        hit = self._by_path.get(path)
        if hit is None or time.monotonic() - hit[1] > self.ttl_s:
            return None
        return hit[0]


def display_path(path: str) -> str:
    """A path as valid UTF-8 for records and alarms: bytes that are not UTF-8 appear as ``\\xe9``
    (names read from disk carry them as lone surrogates, which JSON and the database refuse)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def tamper_alarm(record: dict[str, Any], now: datetime) -> AlarmEvent:
    """The ``wtp_0001`` alarm for one tamper record."""
    proc = record.get("process") or {}
    who = f" by {proc.get('exe') or proc.get('pid')}" if proc else ""
    return AlarmEvent(
        key=f"wtp-{new_id()}",
        occurred_at=now,
        event_class=WTP_TAMPER,
        severity=alarm_class(WTP_TAMPER).severity,
        title=f"Web page tampering: {record['action']} {record['path']}{who}"[:512],
        fingerprint=f"{WTP_TAMPER}:{record['action']}:{record['path']}"[:256],
        evidence={
            "file_path": record["path"],
            "action": record["action"],
            "outcome": record["outcome"],
            "directory": record.get("directory"),
            "process": record.get("process"),
            "moved_to": record.get("moved_to"),
        },
    )
