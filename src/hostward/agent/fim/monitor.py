"""``FimMonitor``: what the agent runtime drives (policy in, ``fim_changes`` observations out).

The runtime creates one monitor with the path of its baseline database and a callback, calls
``configure(fim_policy(bundle))`` whenever a policy bundle arrives, ``check()`` from its scan worker
(scheduled daily check, the "fim" scan kind, and once after ``configure`` so new roots get their silent
first baseline), ``health()`` for the heartbeat and ``stop()`` at shutdown. Changes found by checks and
by the realtime watcher are passed to ``emit`` as ``Observation("fim_changes", changes)``; the
``fim`` detector turns them into alarms and records.

``emit`` is called from the watcher thread too: it must only queue.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from hostward.agent.detectors.base import Observation
from hostward.agent.detectors.fim import OBSERVATION, FimPolicy
from hostward.agent.fim.diff import Change
from hostward.agent.fim.engine import CheckResult, FimEngine
from hostward.agent.fim.pkgdb import PackageIndex, system_index
from hostward.agent.fim.scan import Scanner
from hostward.agent.fim.store import BaselineError, BaselineStore
from hostward.agent.fim.watch import FimWatcher
from hostward.wire import DetectorHealth

log = logging.getLogger(__name__)


class FimMonitor:
    """Engine + watcher for one agent, configured from the ``file_integrity`` policy."""

    name = "fim_monitor"

    def __init__(
        self,
        db_path: Path,
        emit: Callable[[Observation], None],
        *,
        packages: PackageIndex | None = None,
        use_system_packages: bool = True,
    ) -> None:
        self.db_path = db_path
        self.emit = emit
        self._packages = (
            packages if packages is not None else (system_index() if use_system_packages else None)
        )
        self._engine: FimEngine | None = None
        self._watcher: FimWatcher | None = None
        self._policy: FimPolicy | None = None
        self._lock = threading.Lock()
        self._error = ""
        self._notice = ""

    def configure(self, policy: FimPolicy) -> None:
        """Apply a policy: roots, throttle, realtime on/off. Idempotent; cheap when nothing changed."""
        with self._lock:
            if policy == self._policy:
                return
            self._stop_watcher()
            if not policy.enabled:
                self._policy = policy
                return
            scanner = Scanner(workers=policy.workers, rate=policy.rate_bytes_per_s)
            if self._engine is None:
                store = self._open_store()
                self._engine = FimEngine(store, policy.roots, scanner=scanner, packages=self._packages)
            else:
                self._engine.scanner = scanner
                self._engine.set_roots(policy.roots)
            self._policy = policy
            if policy.realtime:
                self._watcher = FimWatcher(self._engine, self._on_changes, use_fanotify=policy.fanotify)
                try:
                    self._watcher.start()
                    self._error = ""
                except OSError as exc:
                    self._error = f"realtime watch unavailable: {exc}"
                    self._watcher = None

    def _open_store(self) -> BaselineStore:
        """The baseline; one that cannot be read (corrupt, older schema) is set aside and rebuilt."""
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return BaselineStore.open(self.db_path, create=True)
        except BaselineError as exc:
            aside = self.db_path.with_name(self.db_path.name + ".unreadable")
            log.warning("fim: %s; moved to %s, building a new baseline", exc, aside)
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.db_path}{suffix}")
                if src.exists():
                    os.replace(src, f"{aside}{suffix}")
            self._notice = f"previous baseline unreadable ({exc}); rebuilt (first check is silent)"
            return BaselineStore.open(self.db_path, create=True)

    @property
    def engine(self) -> FimEngine | None:
        """The engine once configured (accepting changes, per-path checks), else None."""
        return self._engine

    def check(self, *, full: bool = False, cancel: threading.Event | None = None) -> CheckResult | None:
        """One check of every root (None when FIM is disabled); changes are emitted as an observation."""
        engine = self._engine
        if engine is None or self._policy is None or not self._policy.enabled:
            return None
        result = engine.check(full=full, update=True, cancel=cancel)
        self._on_changes(result.changes)
        return result

    def poll(self) -> None:
        """Re-check changes deferred while the package manager ran (the watcher does this itself)."""
        if self._engine is not None and self._watcher is None:
            self._on_changes(self._engine.poll())

    def _on_changes(self, changes: list[Change]) -> None:
        if changes:
            self.emit(Observation(OBSERVATION, changes))

    def _stop_watcher(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def stop(self) -> None:
        with self._lock:
            self._stop_watcher()
            if self._engine is not None:
                self._engine.close()
                self._engine = None
            self._policy = None

    def health(self) -> DetectorHealth:
        policy = self._policy
        if policy is None or not policy.enabled or self._engine is None:
            return DetectorHealth(name=self.name, status="disabled")
        engine_health = self._engine.health()
        reasons = list(engine_health.reasons)
        if self._notice:
            reasons.append(self._notice)
        counters = dict(engine_health.counters)
        status = "running"
        if self._error:
            status = "degraded"
            reasons.insert(0, self._error)
        if self._watcher is not None:
            wh = self._watcher.health()
            reasons = wh.reasons + reasons
            counters.update({f"watch_{k}": v for k, v in wh.counters.items()})
            if wh.status in ("degraded", "failed", "stopped"):
                status = "degraded"
        elif policy.realtime and not self._error:
            status = "degraded"
            reasons.insert(0, "realtime watcher not running")
        return DetectorHealth(
            name=self.name, status=status, reason="; ".join(reasons)[:1024], counters=counters
        )
