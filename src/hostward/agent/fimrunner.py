"""File integrity monitoring inside the agent: the ``file_protection`` policy drives a ``FimMonitor``; its
changes become ``fim_change`` records and ``fileprotect_0002``/``0004`` alarms in the outbox.

- FIM runs when the bundle says protection is on, the edition includes it (enterprise, premium, WTP) and
  the ``file_protection`` policy is enabled. The first check after a configuration builds the baseline
  of new roots silently; with a baseline from a previous run it reports what changed while the agent was
  stopped. Turning FIM off (policy, edition, protection) drops the baseline, so turning it on again
  starts with a new silent one instead of alarming on everything that changed meanwhile.
- Threads: ``hostward-fim`` applies the policy, runs that first check, re-checks deferred changes and
  runs accepts; ``hostward-fim-events`` feeds changes to the detector and writes the events to the
  outbox. The realtime watcher (and checks run by scans) only queue changes for it.
- ``fim_accept {paths, expected?, actor?}``: paths still in the state the operator saw (``expected``
  content hash, "" = absent) are re-baselined silently and confirmed with a ``baseline`` record; a path
  that changed again since is checked as usual (record and alarm for the newer change).
- Scans: the ``fim`` scan kind and every comprehensive scan run a full check (every file rehashed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostward.agent.commands import failed, succeeded
from hostward.agent.detectors.base import DetectorEvent, Observation
from hostward.agent.detectors.fim import OBSERVATION, RECORD_TOPIC, FimDetector, FimPolicy, fim_policy
from hostward.agent.detectors.fim import POLICY_KEY as DETECTOR_POLICY_KEY
from hostward.agent.errors import AgentError
from hostward.agent.fim.diff import entry_dict, type_name
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.monitor import FimMonitor
from hostward.agent.fim.pkgdb import PackageIndex
from hostward.agent.fim.scan import P_SHA, Entry, ScanCancelled
from hostward.agent.scan import CheckUnavailable, ScanJob
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.wire import Command, CommandResult, DetectorHealth, PolicyBundle, PolicyState, RecordEvent

if TYPE_CHECKING:
    from hostward.agent.runtime import Agent

log = logging.getLogger(__name__)

POLICY_KEY = "file_protection"
FIM_EDITIONS = ("enterprise", "premium", "wtp")
DB_NAME = "fim.db"
ACCEPT_COMMAND = "fim_accept"
MAX_ACCEPT_PATHS = 1000
POLL_S = 5.0
FLUSH_TIMEOUT_S = 30.0

ResultPoster = Callable[[str, CommandResult], None]
_OFF = FimPolicy(enabled=False, roots=[])


def fim_bundle(bundle: PolicyBundle | None) -> PolicyBundle | None:
    """``bundle`` as the FIM detector reads it: the ``file_protection`` policy under the detector's key,
    switched off where the edition has no FIM or protection is off."""
    if bundle is None:
        return None
    state = bundle.policies.get(POLICY_KEY)
    enabled = bool(
        bundle.protection and bundle.edition in FIM_EDITIONS and state is not None and state.enabled
    )
    settings = dict(state.settings) if state is not None else {}
    return bundle.model_copy(
        update={"policies": {DETECTOR_POLICY_KEY: PolicyState(enabled=enabled, settings=settings)}}
    )


def _key(*parts: str) -> str:
    return "fimbase-" + hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:40]


class FimRunner:
    """The agent's FIM component (see the module docstring); ``start``/``stop`` bracket its threads."""

    name = "fim"

    def __init__(
        self,
        db_path: Path,
        outbox: Outbox,
        clock: Clock,
        *,
        notify: Callable[[], None] = lambda: None,
        post_result: ResultPoster | None = None,
        packages: PackageIndex | None = None,
        use_system_packages: bool = True,
    ) -> None:
        self.db_path = db_path
        self.outbox = outbox
        self.clock = clock
        self.notify = notify
        self.post_result = post_result
        self.detector = FimDetector()
        self.detector.policy = _OFF  # until a bundle says otherwise
        self.monitor = FimMonitor(
            db_path, self._observe, packages=packages, use_system_packages=use_system_packages
        )
        self._events: queue.Queue[Observation] = queue.Queue()
        self._listeners: list[Callable[[Observation], None]] = []
        self._pending = 0  # observations queued and not yet in the outbox
        self._idle = threading.Condition()
        self._accepts: queue.Queue[Command] = queue.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._apply_lock = threading.Lock()
        self._desired: FimPolicy | None = None  # None until the first bundle
        self._applied: FimPolicy | None = None
        self._error = ""
        self._run_error = ""
        self._threads: list[threading.Thread] = []
        # The monitor's health takes the engine lock, which a check holds for its whole run: the
        # heartbeat reads this copy, refreshed by the control thread between its duties.
        self._monitor_health = self.monitor.health()
        self.counters: dict[str, int] = {
            "first_checks": 0,
            "scan_checks": 0,
            "accepted_paths": 0,
            "changed_since": 0,
            "events": 0,
            "errors": 0,
        }

    @classmethod
    def for_agent(cls, agent: Agent) -> FimRunner:
        """The runner of a running agent: baseline in its state directory, results posted by its client."""
        client_box: list[Any] = []

        def post(command_id: str, result: CommandResult) -> None:
            if not client_box:
                client_box.append(agent.new_client())
            agent.post_result(client_box[0], command_id, result)

        return cls(
            agent.cfg.state_dir / DB_NAME,
            agent.outbox,
            agent.clock,
            notify=lambda: agent.outbox_ready.set(),
            post_result=post,
        )

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        for name, target in (("hostward-fim", self._control_loop), ("hostward-fim-events", self._event_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads (a running check is cancelled), the watcher and the baseline (idempotent)."""
        self._stopping.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.monitor.stop()  # the watcher first: what it queued until now still reaches the outbox
        self._drain_events()
        self._applied = None
        self.detector.stop()

    def step(self) -> None:
        """One pass of the threads' duties on the calling thread (tests drive the agent this way)."""
        self._apply()
        while True:
            try:
                command = self._accepts.get_nowait()
            except queue.Empty:
                break
            self._finish(command, self.accept(command.payload, command.id))
        self.monitor.poll()
        self._drain_events()
        self._monitor_health = self.monitor.health()

    # ---- policy ---------------------------------------------------------------------------------

    def configure(self, bundle: PolicyBundle | None) -> None:
        """Take a new bundle (cheap, any thread): the control thread applies it."""
        if bundle is None:
            return
        view = fim_bundle(bundle)
        assert view is not None
        try:
            policy = fim_policy(view)
            self._error = ""
        except AgentError as exc:
            # The manager validates the policy; an older manager or a hand-edited bundle may not.
            self._error = f"file_protection policy refused: {exc}"
            log.warning("fim: %s", self._error)
            policy = _OFF
            view = view.model_copy(update={"policies": {DETECTOR_POLICY_KEY: PolicyState(enabled=False)}})
        self.detector.configure(view)
        self._desired = policy
        self._wake.set()

    @property
    def enabled(self) -> bool:
        return self._desired is not None and self._desired.enabled

    def _apply(self, cancel: threading.Event | None = None) -> None:
        """Bring the monitor to the desired policy; after a change, check once (silent for new roots)."""
        with self._apply_lock:
            desired = self._desired
            if desired is None or desired == self._applied:
                return
            if not desired.enabled:
                self.monitor.stop()
                self._drop_baseline()
                self._applied = desired
                return
            try:
                self.monitor.configure(desired)
            except (OSError, AgentError) as exc:
                self._run_error = f"cannot start file integrity monitoring: {exc}"
                log.error("fim: %s", self._run_error)
                return
            self._run_error = ""
            self._applied = desired
            try:
                self.monitor.check(cancel=cancel or self._stopping)
                self.counters["first_checks"] += 1
            except ScanCancelled:
                # Not applied after all: the next pass (or the next start) checks again.
                self._applied = None

    def _drop_baseline(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.db_path}{suffix}")
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("fim: cannot remove the old baseline %s%s: %s", self.db_path, suffix, exc)

    # ---- changes -> events ----------------------------------------------------------------------

    def _observe(self, observation: Observation) -> None:
        # Called by the watcher thread and by checks: only queue.
        with self._idle:
            self._pending += 1
        self._events.put(observation)

    def _delivered(self) -> None:
        with self._idle:
            self._pending -= 1
            if self._pending <= 0:
                self._idle.notify_all()

    def add_listener(self, listener: Callable[[Observation], None]) -> None:
        """Also hand every change observation to ``listener`` (the malware scanner; it must only queue)."""
        self._listeners.append(listener)

    def _deliver(self, observation: Observation) -> None:
        for listener in self._listeners:
            try:
                listener(observation)
            except Exception:
                log.exception("fim change listener failed")
                self.counters["errors"] += 1
        try:
            events = self.detector.feed(observation, self.clock.now())
        except Exception:
            log.exception("fim detector failed")
            self.counters["errors"] += 1
            return
        self._put(events)

    def _put(self, events: list[DetectorEvent]) -> None:
        if events:
            self.outbox.put_many(events)
            self.counters["events"] += len(events)
            self.notify()

    def _drain_events(self) -> None:
        while True:
            try:
                observation = self._events.get_nowait()
            except queue.Empty:
                return
            try:
                self._deliver(observation)
            finally:
                self._delivered()

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Wait until queued changes are in the outbox (False after ``timeout`` seconds)."""
        if not self._threads:
            self._drain_events()
            return True
        with self._idle:
            return self._idle.wait_for(lambda: self._pending <= 0, timeout)

    # ---- threads --------------------------------------------------------------------------------

    def _control_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._apply()
                while not self._stopping.is_set():
                    try:
                        command = self._accepts.get_nowait()
                    except queue.Empty:
                        break
                    self._finish(command, self.accept(command.payload, command.id))
                self.monitor.poll()
                self._monitor_health = self.monitor.health()
            except Exception:
                log.exception("fim control loop error")
                self.counters["errors"] += 1
            self._wake.wait(POLL_S)
            self._wake.clear()

    def _event_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                observation = self._events.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(observation)
            except Exception:
                log.exception("fim event delivery failed")
                self.counters["errors"] += 1
            finally:
                self._delivered()

    # ---- scans ----------------------------------------------------------------------------------

    def scan_check(self, job: ScanJob) -> str:
        """The scan check (``fim`` kind and comprehensive scans): a full check of every monitored path."""
        self._apply(job.cancel)
        if not self.enabled:
            raise CheckUnavailable(
                "file integrity monitoring is off on this server (it needs protection of the enterprise "
                "edition or above and the file_protection policy enabled)"
            )
        result = self.monitor.check(full=True, cancel=job.cancel)
        if result is None:
            raise CheckUnavailable("file integrity monitoring is not running")
        self.counters["scan_checks"] += 1
        if not self.flush():
            log.warning("fim: changes of scan %s are still being queued", job.scan_id)
        changes = [c for c in result.changes if c.significant()]  # what the detector reports
        packages = sum(1 for c in changes if c.label == "package_update")
        detail = f"file integrity: {result.stats.entries} entries checked, {len(changes)} changes"
        if packages:
            detail += f" ({packages} package updates)"
        if result.baselined_roots:
            detail += f", {len(result.baselined_roots)} new paths baselined"
        return detail

    # ---- accept ---------------------------------------------------------------------------------

    def accept_command(self, command: Command) -> CommandResult | None:
        """``fim_accept`` handler: runs on the control thread; the result is posted when done."""
        if self.post_result is None or not self._threads:
            return self.accept(command.payload, command.id)
        self._accepts.put(command)
        self._wake.set()
        return None

    def _finish(self, command: Command, result: CommandResult) -> None:
        if self.post_result is not None:
            self.post_result(command.id, result)

    def accept(self, payload: dict[str, Any], command_id: str) -> CommandResult:
        """Re-baseline ``payload["paths"]`` (see the module docstring); returns the command result."""
        paths = payload.get("paths")
        expected = payload.get("expected") or {}
        actor = str(payload.get("actor") or "")[:64]
        if (
            not isinstance(paths, list)
            or not paths
            or len(paths) > MAX_ACCEPT_PATHS
            or not all(isinstance(p, str) and p.startswith("/") for p in paths)
            or not isinstance(expected, dict)
        ):
            return failed(f"fim_accept needs payload {{paths: [1-{MAX_ACCEPT_PATHS} absolute paths]}}")
        self._apply()
        engine = self.monitor.engine
        if not self.enabled or engine is None:
            return failed("file integrity monitoring is off on this server; nothing to accept")
        accepted: list[str] = []
        changed: list[str] = []
        unmonitored: list[str] = []
        rootset = engine.rootset
        for path in dict.fromkeys(paths):
            raw = os.fsencode(path)
            if rootset.owner(raw) is None and not rootset.roots_under(raw):
                unmonitored.append(path)
                continue
            want = expected.get(path)
            if isinstance(want, str) and not self._still(engine, raw, want):
                changed.append(path)
                continue
            accepted.append(path)
        if accepted:
            # Whatever differs from the baseline now is what the operator accepted: absorbed, no alarm.
            engine.check_paths([os.fsencode(p) for p in accepted])
        if changed:
            newer = engine.check_paths([os.fsencode(p) for p in changed])
            if newer:
                self._observe(Observation(OBSERVATION, newer))
        self._put(self._baseline_records(engine, accepted, command_id, actor))
        self.counters["accepted_paths"] += len(accepted)
        self.counters["changed_since"] += len(changed)
        detail = f"{len(accepted)} path(s) accepted as the new baseline"
        if changed:
            detail += f"; {len(changed)} changed again since and were reported: {', '.join(changed[:5])}"
        if unmonitored:
            detail += f"; {len(unmonitored)} not monitored: {', '.join(unmonitored[:5])}"
        return succeeded(detail, accepted=accepted, changed_since=changed, unmonitored=unmonitored)

    @staticmethod
    def _still(engine: FimEngine, path: bytes, want: str) -> bool:
        """Whether ``path`` still has the content hash the operator saw ("" = absent)."""
        row = engine.scanner.scan_path(path)
        if row is None:
            return want == ""
        sha = row[P_SHA]
        if sha is None:
            return True  # a directory or an unreadable file: nothing to compare, accept what is there
        return bool(sha.hex() == want)

    def _baseline_records(
        self, engine: FimEngine, paths: list[str], command_id: str, actor: str
    ) -> list[DetectorEvent]:
        rows = engine.store.get_many([os.fsencode(p) for p in paths])
        now = self.clock.now()
        events: list[DetectorEvent] = []
        for path in paths:
            raw = os.fsencode(path)
            row = rows.get(raw)
            entry = Entry._make(row) if row is not None else None
            root = engine.rootset.owner(raw)
            data = {
                "path": path,
                "action": "baseline",
                "operation": "accept",
                "label": "change",
                "type": type_name(entry.mode) if entry is not None else "unknown",
                "new": entry_dict(entry) if entry is not None else {},
                "important": bool(root is not None and root.important),
                "actor": actor,
            }
            events.append(
                RecordEvent(key=_key(command_id, path), occurred_at=now, topic=RECORD_TOPIC, data=data)
            )
        return events

    # ---- health ---------------------------------------------------------------------------------

    def health(self) -> list[DetectorHealth]:
        """The monitor (files baselined, watches, overflow rescans, fanotify) and the detector; nothing
        while FIM is off here (no edition with FIM, or its policy off) and nothing went wrong."""
        problems = [p for p in (self._error, self._run_error) if p]
        if not self.enabled and not problems:
            return []
        monitor = self._monitor_health
        counters = {**monitor.counters, **{f"runner_{k}": v for k, v in self.counters.items()}}
        monitor = monitor.model_copy(update={"counters": counters})
        if problems:
            reason = "; ".join([*problems, monitor.reason] if monitor.reason else problems)
            monitor = monitor.model_copy(update={"status": "degraded", "reason": reason[:1024]})
        return [monitor, self.detector.health()]
