"""File integrity changes -> alarms and change records. Pure logic: the FIM engine does the I/O.

Input observations of kind ``fim_changes`` carry a list of classified ``Change`` records (from
``FimEngine.check`` / ``check_paths`` / the realtime watcher). For each significant change:

- a ``RecordEvent`` (topic ``fim_change``) for the FIM page: path, action, operation, old -> new
  attributes, process, package label;
- an ``AlarmEvent`` unless it is a package update: ``fileprotect_0002`` (important file change) for the
  default set, ``fileprotect_0004`` (file/directory change) for operator directories. Evidence uses the
  canonical keys ``file_path`` and ``file_hash`` (+ ``process_path``, ``process_cmdline`` when known).

Changes that only echo others (ctime-only, a directory's mtime after an entry was added) are dropped.
A burst (``rm -rf`` of a monitored tree) yields at most ``MAX_ALARMS_PER_FEED`` alarms plus one summary.

``fim_policy(bundle)`` turns the ``file_integrity`` policy into the roots the engine monitors.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.fim.config import OPERATIONS, WatchRoot, default_roots, operator_roots
from hostward.agent.fim.diff import Change, change_dict, display_path
from hostward.wire import AlarmEvent, DetectorHealth, PolicyBundle, RecordEvent, alarm_class

POLICY_KEY = "file_integrity"
IMPORTANT_FILE_CHANGE = "fileprotect_0002"
FILE_DIR_CHANGE = "fileprotect_0004"
RECORD_TOPIC = "fim_change"
OBSERVATION = "fim_changes"
MAX_ALARMS_PER_FEED = 100

_VERB = {"added": "created", "removed": "deleted", "changed": "changed", "moved": "moved"}


@dataclass(frozen=True)
class FimPolicy:
    """What the runtime configures the engine and watcher with."""

    enabled: bool
    roots: list[WatchRoot]
    realtime: bool = True
    fanotify: bool = True
    rate_bytes_per_s: int | None = None
    workers: int = 1


def fim_policy(bundle: PolicyBundle | None) -> FimPolicy:
    """The FIM settings of ``bundle`` (defaults when the policy is absent).

    Settings: ``important_files`` (bool, default on: the reference set), ``extra_files`` (list of paths,
    important), ``directories`` (list of {path, recursive, ignore, operations}, at most 50),
    ``realtime``, ``fanotify``, ``rate_bytes_per_s``, ``workers``.
    """
    state = bundle.policies.get(POLICY_KEY) if bundle is not None else None
    settings: dict[str, Any] = dict(state.settings) if state is not None else {}
    enabled = state.enabled if state is not None else True
    if bundle is not None and not bundle.protection:
        enabled = False
    roots: list[WatchRoot] = default_roots() if settings.get("important_files", True) else []
    roots += [WatchRoot(str(p).encode(), important=True) for p in settings.get("extra_files", [])]
    dirs = []
    for item in settings.get("directories", []):
        dirs.append(
            WatchRoot(
                str(item["path"]).encode(),
                recursive=bool(item.get("recursive", True)),
                ignore=tuple(item.get("ignore", ())),
                operations=frozenset(item.get("operations", OPERATIONS)),
            )
        )
    roots += operator_roots(dirs)
    rate = settings.get("rate_bytes_per_s")
    return FimPolicy(
        enabled=enabled,
        roots=roots,
        realtime=bool(settings.get("realtime", True)),
        fanotify=bool(settings.get("fanotify", True)),
        rate_bytes_per_s=int(rate) if rate else None,
        workers=int(settings.get("workers", 1)),
    )


def _event_key(prefix: str, change: Change) -> str:
    entry = change.new or change.old
    stamp = entry.ctime_ns if entry is not None else 0
    digest = (entry.sha256 or b"").hex() if entry is not None else ""
    raw = b"|".join([change.path, change.action.encode(), str(stamp).encode(), digest.encode()])
    return f"{prefix}-{hashlib.sha256(raw).hexdigest()[:40]}"


def _file_hash(change: Change) -> str:
    entry = change.new if change.new is not None else change.old
    return entry.sha256.hex() if entry is not None and entry.sha256 is not None else ""


def evidence(change: Change) -> dict[str, Any]:
    """Alarm evidence: canonical keys first, then the change itself."""
    data = change_dict(change)
    out: dict[str, Any] = {
        "file_path": data.pop("path"),
        "file_hash": _file_hash(change),
        "change_type": data.pop("action"),
        **data,
    }
    if change.old is not None and change.old.sha256 is not None:
        out["old_hash"] = change.old.sha256.hex()
    if change.process is not None:
        out["process_path"] = change.process.exe
        out["process_cmdline"] = change.process.cmdline
        out["process_pid"] = change.process.pid
        out["process_user"] = change.process.user
    return out


def _title(change: Change) -> str:
    what = "Important file" if change.important else ("Directory" if change.is_dir else "File")
    title = f"{what} {_VERB[change.action]}: {display_path(change.path)}"
    if change.action in ("changed", "moved") and change.attrs:
        title += f" ({', '.join(change.attrs)})"
    if change.process is not None and change.process.exe:
        title += f" by {change.process.exe}"
    return title[:512]


def change_events(change: Change, now: datetime, *, alarm: bool = True) -> list[DetectorEvent]:
    """The record (always) and the alarm (unless a package update, or ``alarm`` is False) of a change."""
    events: list[DetectorEvent] = []
    record = change_dict(change) | {"important": change.important}
    events.append(
        RecordEvent(key=_event_key("fimrec", change), occurred_at=now, topic=RECORD_TOPIC, data=record)
    )
    if alarm and change.label != "package_update":
        code = IMPORTANT_FILE_CHANGE if change.important else FILE_DIR_CHANGE
        events.append(
            AlarmEvent(
                key=_event_key("fim", change),
                occurred_at=now,
                event_class=code,
                severity=alarm_class(code).severity,
                title=_title(change),
                fingerprint=f"{code}:{_file_hash(change) or change.action}:{display_path(change.path)}"[:256],
                evidence=evidence(change),
            )
        )
    return events


def _summary(rest: list[Change], now: datetime) -> AlarmEvent:
    important = any(c.important for c in rest)
    code = IMPORTANT_FILE_CHANGE if important else FILE_DIR_CHANGE
    paths = [display_path(c.path) for c in rest]
    raw = "\n".join(paths).encode()
    return AlarmEvent(
        key=f"fimsum-{hashlib.sha256(raw).hexdigest()[:40]}",
        occurred_at=now,
        event_class=code,
        severity=alarm_class(code).severity,
        title=f"{len(rest)} more file changes (first: {paths[0]})"[:512],
        fingerprint=f"{code}:burst:{hashlib.sha256(raw).hexdigest()[:32]}",
        evidence={
            "file_path": paths[0],
            "file_hash": _file_hash(rest[0]),
            "change_type": "burst",
            "count": len(rest),
            "sample_paths": paths[:50],
        },
    )


class FimDetector:
    """Detector protocol adapter: ``fim_changes`` observations -> records and alarms."""

    name = "fim"
    inputs = frozenset({OBSERVATION})
    heavy = False

    def __init__(self) -> None:
        self.policy = fim_policy(None)
        self.counters = {"changes": 0, "alarms": 0, "package_updates": 0, "suppressed": 0}

    def configure(self, bundle: PolicyBundle | None) -> None:
        self.policy = fim_policy(bundle)

    def feed(self, observation: Observation, now: datetime) -> list[DetectorEvent]:
        if observation.kind != OBSERVATION or not self.policy.enabled:
            return []
        events: list[DetectorEvent] = []
        overflow: list[Change] = []
        alarms = 0
        for change in observation.data:
            if not change.significant():
                self.counters["suppressed"] += 1
                continue
            self.counters["changes"] += 1
            if change.label == "package_update":
                self.counters["package_updates"] += 1
            wants_alarm = change.label != "package_update"
            if wants_alarm and alarms >= MAX_ALARMS_PER_FEED:
                overflow.append(change)
                events.extend(change_events(change, now, alarm=False))
                continue
            events.extend(change_events(change, now))
            alarms += int(wants_alarm)
        if overflow:
            events.append(_summary(overflow, now))
            alarms += 1
        self.counters["alarms"] += alarms
        return events

    def health(self) -> DetectorHealth:
        status = "running" if self.policy.enabled else "disabled"
        return DetectorHealth(name=self.name, status=status, counters=dict(self.counters))

    def stop(self) -> None:
        return None
