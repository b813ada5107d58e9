"""The scheduler: a background thread in every manager replica that runs due periodic tasks and jobs.

Every replica runs one; the database decides who does what (see ``jobs``), so adding replicas never
runs a job twice. ``run_once(now)`` is one iteration, for tests with an injected time.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from hostward.manager.context import ManagerContext
from hostward.manager.scheduler import jobs
from hostward.manager.scheduler.registry import JobRun, Registry

log = logging.getLogger("hostward.manager.scheduler")


class _LeaseLost(Exception):
    """The job was re-claimed by another replica while it ran here: its work is rolled back."""


class Scheduler:
    """Runs periodic tasks and claims jobs for this replica (``ctx.instance_name``)."""

    def __init__(
        self,
        ctx: ManagerContext,
        registry: Registry | None = None,
        *,
        lease_s: float = 300.0,
        batch: int = 50,
        retry_base_s: float = 10.0,
        retry_max_s: float = 3600.0,
    ) -> None:
        if registry is None:
            from hostward.manager.scheduler.builtin import builtin_registry

            registry = builtin_registry()
        self.ctx = ctx
        self.registry = registry
        self.instance = ctx.instance_name
        self.lease_s = lease_s
        self.batch = batch
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()
        self._periodic_ready = False
        self._last_jobs = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (no-op when it is already running)."""
        with self._lifecycle:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="hostward-scheduler", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the thread to stop after the job in hand and wait for it; safe to call repeatedly."""
        with self._lifecycle:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("scheduler thread did not stop within %.0f s", timeout)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _loop(self) -> None:
        poll = self.ctx.settings.scheduler_poll_s
        while not self._stop.is_set():
            busy = False
            try:
                self.run_once()
                busy = self._last_jobs >= self.batch
            except Exception:
                # The database may be briefly unreachable; the next iteration retries.
                log.exception("scheduler iteration failed")
            if not busy:
                self._stop.wait(poll)

    # ---- one iteration ---------------------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> int:
        """Run due periodic tasks, then up to ``batch`` due jobs; return how many ran (tasks + jobs).

        ``now`` fixes the time for the whole iteration (tests); by default the context clock is read
        for every claim.
        """
        tasks = self._run_periodic(now)
        ran = 0
        while ran < self.batch and not self._stop.is_set():
            if not self._run_one_job(now or self.ctx.clock.now()):
                break
            ran += 1
        self._last_jobs = ran
        return tasks + ran

    def _run_periodic(self, now: datetime | None) -> int:
        specs = {spec.name: spec for spec in self.registry.periodic_tasks}
        if not specs:
            return 0
        at = now or self.ctx.clock.now()
        intervals = {name: spec.interval_s for name, spec in specs.items()}
        if not self._periodic_ready:
            with self.ctx.uow() as session:
                jobs.ensure_periodic_rows(session, intervals, at)
            self._periodic_ready = True
        with self.ctx.uow() as session:
            claimed = jobs.claim_periodic(session, now=at, instance=self.instance, intervals=intervals)
        for name in claimed:
            spec = specs[name]
            try:
                with self.ctx.uow() as session:
                    spec.handler(session, at, self.ctx.settings)
                    jobs.record_periodic_error(session, name, "")
            except Exception as exc:
                log.exception("periodic task %s failed", name)
                with self.ctx.uow() as session:
                    jobs.record_periodic_error(session, name, f"{type(exc).__name__}: {exc}")
        return len(claimed)

    def _run_one_job(self, now: datetime) -> bool:
        with self.ctx.uow() as session:
            claimed = jobs.claim_job(
                session, now=now, instance=self.instance, kinds=self.registry.job_kinds, lease_s=self.lease_s
            )
        if claimed is None:
            return False
        kind = self.registry.job(claimed.kind)
        assert kind is not None  # only registered kinds are claimed
        if claimed.attempts > kind.max_attempts:
            # Every allowed attempt died with its replica (lease expired each time): give up.
            self._record_failure(
                claimed, now, "lease expired: the replica running it stopped", kind.max_attempts
            )
            return True
        run = JobRun(
            id=claimed.id,
            kind=claimed.kind,
            payload=claimed.payload,
            attempt=claimed.attempts,
            now=now,
            instance=self.instance,
            settings=self.ctx.settings,
        )
        try:
            with self.ctx.uow() as session:
                kind.handler(session, run)
                if not jobs.finish_job(session, claimed, instance=self.instance, now=now):
                    raise _LeaseLost
        except _LeaseLost:
            log.warning(
                "job %s (%s) lost its lease while running; its work was rolled back", run.id, run.kind
            )
        except Exception as exc:
            log.warning(
                "job %s (%s) attempt %d failed: %s", run.id, run.kind, run.attempt, exc, exc_info=True
            )
            self._record_failure(claimed, now, f"{type(exc).__name__}: {exc}", kind.max_attempts)
        return True

    def _record_failure(self, claimed: jobs.ClaimedJob, now: datetime, error: str, max_attempts: int) -> None:
        with self.ctx.uow() as session:
            jobs.fail_job(
                session,
                claimed,
                instance=self.instance,
                now=now,
                error=error,
                max_attempts=max_attempts,
                base_s=self.retry_base_s,
                max_s=self.retry_max_s,
            )
