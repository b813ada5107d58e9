"""Process and file threats inside the agent: proc connector (or /proc polling) -> process detectors, and
periodic file collections -> set-id, abnormal-shell and crontab detectors.

- Process events are handled on the collector's enrichment thread: the detectors are pure and fast,
  alarms go straight to the outbox, and a reverse shell the policy wants killed is killed right there
  (before its alarm is queued, so the alarm says what died). Exec events are also handed to
  ``on_exec`` (the malware component queues the executable for scanning; it must not block).
- Set-id files, shells and cron tables are collected by ``tick`` on the owner's thread at their
  intervals; a file reported by the file watcher (``file_changed``) updates the set-id picture at once,
  so ``chmod u+s`` in a monitored directory is reported without waiting for the next collection.
- Every collection looks at the host through ``host_root`` (the host's file system mounted elsewhere);
  reported paths are the paths the agent sees.
- The set-id and shell baselines are kept in the state directory (``threatstate``): after a restart
  the first collection is compared with them, so what changed while the agent was down is reported and
  nothing already known is reported again. A check switched off forgets its baseline. Directories
  added to the set-id policy start silently (their files join the baseline unreported).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hostward.agent.collectors.crontab import read_cron_entries
from hostward.agent.collectors.filemodes import (
    DEFAULT_SHELLS,
    ODD_PLACES,
    _hash,
    collect_setid,
    collect_shells,
)
from hostward.agent.collectors.proccn import Mode, ProcessCollector
from hostward.agent.detectors.base import DetectorEvent, DetectorSet, Observation
from hostward.agent.detectors.crontab import CRON_ENTRIES, SuspiciousCrontabDetector
from hostward.agent.detectors.highrisk import HighRiskCommandDetector
from hostward.agent.detectors.privesc import PrivilegeEscalationDetector
from hostward.agent.detectors.procmodel import PROCESS_EXEC, ProcessInfo
from hostward.agent.detectors.revshell import KillRequest, ReverseShellDetector
from hostward.agent.detectors.setid import SETID_FILES, FilePrivilegeEscalationDetector, SetidEntry
from hostward.agent.detectors.shells import SHELL_SNAPSHOT, AbnormalShellDetector, ShellSnapshot
from hostward.agent.malware.mounts import MountTable
from hostward.agent.malwarepolicy import Desired
from hostward.agent.threatstate import (
    SETID_FILE,
    SHELLS_FILE,
    forget,
    load_setid,
    load_shells,
    save_setid,
    save_shells,
)
from hostward.core.clock import Clock
from hostward.wire import AlarmEvent, DetectorHealth

log = logging.getLogger(__name__)

Sink = Callable[[list[Any]], None]
Killer = Callable[[KillRequest], tuple[list[int], str]]  # -> (killed pids, error)
COLLECT_INTERVALS_S = {"setid": 300.0, "shells": 300.0, "crontab": 60.0}
PROCESS_EVENT_POLICIES = frozenset({"reverse_shell", "high_risk_command", "process_privilege_escalation"})
COLLECTION_POLICIES = {
    "setid": "file_privilege_escalation",
    "shells": "abnormal_shell",
    "crontab": "crontab_check",
}


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


class ProcessThreats:
    """The process collector, the process/file detectors and their timers (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        clock: Clock,
        *,
        kill: Killer,
        on_exec: Callable[[ProcessInfo], None] | None = None,
        host_root: str = "/",
        mode: Mode = "auto",
        poll_interval_s: float = 0.5,
        state_dir: Path | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.kill = kill
        self.on_exec = on_exec
        self.host_root = host_root
        self.mode: Mode = mode
        self.poll_interval_s = poll_interval_s
        self.revshell = ReverseShellDetector()
        self.state_dir = state_dir
        self.setid = FilePrivilegeEscalationDetector()
        self.shells = AbnormalShellDetector()
        self.detectors = DetectorSet(
            [
                self.revshell,
                HighRiskCommandDetector(),
                PrivilegeEscalationDetector(),
                self.setid,
                self.shells,
                SuspiciousCrontabDetector(),
            ]
        )
        self.intervals = dict(COLLECT_INTERVALS_S)
        self._due = dict.fromkeys(self.intervals, 0.0)
        self._lock = threading.Lock()
        self.collector: ProcessCollector | None = None
        self.detect = False  # process/file detectors on
        self.collect = False  # the process collector is wanted (detectors or exec scanning)
        self.setid_dirs: tuple[str, ...] = ()
        self._baseline_dirs: tuple[str, ...] | None = None  # the set-id dirs the baseline covers
        self._loaded: set[str] = set()  # collections whose saved baseline was looked at
        self._save_lock = threading.Lock()
        self.policies: frozenset[str] = frozenset()  # enabled policy keys
        self.error = ""
        self.counters = dict.fromkeys(("kills", "kill_refused", "collections", "collection_errors"), 0)

    # ---- policy and lifecycle -------------------------------------------------------------------------

    def configure(self, desired: Desired, *, exec_scan: bool) -> None:
        with self._lock:
            self.detectors.configure(desired.detector_bundle)
            if desired.process and not self.detect:
                self._due = dict.fromkeys(self.intervals, 0.0)  # collect soon after switching on
            self.detect = desired.process
            self.setid_dirs = desired.setid_dirs
            views = desired.detector_bundle.policies if desired.detector_bundle is not None else {}
            self.policies = frozenset(k for k, v in views.items() if v.enabled)
            self.collect = bool(self.policies & PROCESS_EVENT_POLICIES) or exec_scan
            # a check switched off forgets its baseline, so switching it on again starts silently
            if COLLECTION_POLICIES["setid"] not in self.policies:
                self.setid.prime(None)
                self._baseline_dirs = None
                self._forget("setid", SETID_FILE)
            if COLLECTION_POLICIES["shells"] not in self.policies:
                self.shells.previous = None
                self._forget("shells", SHELLS_FILE)

    def apply(self) -> None:
        """Start or stop the collector to match the policy (owner's thread)."""
        if self.collector is not None:
            self.collector.recheck_names = set(self.revshell.shells)  # the policy may name more shells
        if self.collect and self.collector is None:
            collector = ProcessCollector(self._emit, mode=self.mode, poll_interval_s=self.poll_interval_s)
            try:
                collector.start()
            except OSError as exc:
                self.error = f"process events unavailable: {exc}"
                log.error("process threats: %s", self.error)
                return
            self.error = ""
            collector.recheck_names = set(self.revshell.shells)
            self.collector = collector
        elif not self.collect and self.collector is not None:
            self.collector.stop()
            self.collector = None

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()
            self.collector = None
        self.detectors.stop()

    # ---- process events (collector thread) ------------------------------------------------------------

    def _emit(self, obs: Observation) -> None:
        now = self.clock.now()
        with self._lock:
            events = self.detectors.feed(obs, now) if self.detect else []
            kills = self.revshell.take_kill_requests()
        for request in kills:
            killed, error = self.kill(request)
            if error:
                self.counters["kill_refused"] += 1
            else:
                self.counters["kills"] += 1
            for event in events:
                if isinstance(event, AlarmEvent) and event.key == request.alarm_key:
                    event.evidence["killed_pids"] = killed
                    if error:
                        event.evidence["kill_error"] = error
        if events:
            self.sink(events)
        if obs.kind == PROCESS_EXEC and self.on_exec is not None:
            self.on_exec(obs.data)

    # ---- file collections (owner's thread) -------------------------------------------------------------

    def due(self, mono: float) -> bool:
        """Whether ``tick`` has a collection to run now."""
        return self.detect and any(
            COLLECTION_POLICIES[n] in self.policies and mono >= self._due[n] for n in self.intervals
        )

    def rooted(self, paths: Iterable[str]) -> tuple[str, ...]:
        """Host paths as the agent sees them (under ``host_root``)."""
        if self.host_root in ("", "/"):
            return tuple(paths)
        return tuple(os.path.normpath(os.path.join(self.host_root, p.lstrip("/"))) for p in paths)

    def tick(self, mono: float, *, force: bool = False) -> None:
        """Run the collections that are due (all of them with ``force``)."""
        if not self.detect:
            return
        jobs: dict[str, Callable[[], Observation]] = {
            "setid": self._collect_setid,
            "shells": lambda: Observation(
                SHELL_SNAPSHOT,
                collect_shells(self.rooted(DEFAULT_SHELLS), self.rooted(ODD_PLACES), MountTable.read()),
            ),
            "crontab": lambda: Observation(CRON_ENTRIES, read_cron_entries(self.host_root)),
        }
        for name, make in jobs.items():
            if COLLECTION_POLICIES[name] not in self.policies:
                continue
            if not force and mono < self._due[name]:
                continue
            self._due[name] = mono + self.intervals[name]
            try:
                obs = make()
            except Exception as exc:
                self.counters["collection_errors"] += 1
                log.warning("process threats: %s collection failed: %s", name, exc)
                continue
            self.counters["collections"] += 1
            if name == "shells":
                self._load_shells()
            self._feed(obs)

    # ---- baselines kept across restarts ---------------------------------------------------------------

    def _forget(self, name: str, file: str) -> None:
        self._loaded.discard(name)
        if self.state_dir is not None:
            forget(self.state_dir, file)

    def _collect_setid(self) -> Observation:
        """The set-id files now; first the saved baseline is taken up (once), and files under directories
        the baseline does not cover join it unreported."""
        dirs = self.setid_dirs
        current = collect_setid(self.rooted(dirs), MountTable.read())
        with self._lock:
            if "setid" not in self._loaded and self.setid.baseline is None and self.state_dir is not None:
                saved = load_setid(self.state_dir, self.host_root)
                if saved is not None:
                    self._baseline_dirs, saved_baseline = saved
                    self.setid.prime(saved_baseline)
            self._loaded.add("setid")
            baseline = self.setid.baseline
            covered = self._baseline_dirs
            if baseline is not None and covered is not None and covered != dirs:
                added = self.rooted(d for d in dirs if d not in covered)
                if added:
                    fresh = {
                        p: e
                        for p, e in current.items()
                        if p not in baseline and any(_within(p, d) for d in added)
                    }
                    self.setid.prime({**baseline, **fresh})
            self._baseline_dirs = dirs
        return Observation(SETID_FILES, current)

    def _load_shells(self) -> None:
        with self._lock:
            if "shells" in self._loaded or self.shells.previous is not None or self.state_dir is None:
                self._loaded.add("shells")
                return
            self._loaded.add("shells")
            self.shells.previous = load_shells(self.state_dir, self.host_root)

    def _save(self, kind: str) -> None:
        if self.state_dir is None:
            return
        with self._save_lock:
            with self._lock:
                baseline = self.setid.baseline if kind == SETID_FILES else None
                dirs = self._baseline_dirs or self.setid_dirs
                previous: ShellSnapshot | None = self.shells.previous if kind == SHELL_SNAPSHOT else None
            if baseline is not None:
                save_setid(self.state_dir, self.host_root, dirs, baseline)
            elif previous is not None:
                save_shells(self.state_dir, self.host_root, previous)

    def _feed(self, obs: Observation) -> list[DetectorEvent]:
        with self._lock:
            events = self.detectors.feed(obs, self.clock.now())
        if events:
            self.sink(events)
        if obs.kind in (SETID_FILES, SHELL_SNAPSHOT):
            self._save(obs.kind)
        return events

    def file_changed(self, path: str) -> None:
        """A created/changed file seen by the file watcher: update the set-id picture for it now."""
        if not self.detect or COLLECTION_POLICIES["setid"] not in self.policies:
            return
        with self._lock:
            baseline = self.setid.baseline
        if baseline is None:
            return  # the first collection has not run: it will see this file
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        current = dict(baseline)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            current[path] = SetidEntry(
                path,
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_dev,
                st.st_ino,
                _hash(path),
            )
        elif path in current:
            del current[path]
        else:
            return
        self._feed(Observation(SETID_FILES, current))

    # ---- health ---------------------------------------------------------------------------------------

    def health(self) -> list[DetectorHealth]:
        out: list[DetectorHealth] = []
        if self.collector is not None:
            out.append(self.collector.health())
        elif self.error:
            out.append(DetectorHealth(name="process_events", status="failed", reason=self.error[:1024]))
        if self.detect:
            with self._lock:
                out += self.detectors.health()
            counters = {**self.counters}
            out.append(DetectorHealth(name="process_threats", status="running", counters=counters))
        return out
