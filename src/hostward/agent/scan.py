"""Scans requested by the manager: progress events, the asset collection, detections, the final status.

Every event goes to the outbox (never straight to the manager), so a scan that finishes while the
manager is down is still reported, in order, when it comes back.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from hostward.agent.collectors.assets import CATEGORIES, AssetCollector
from hostward.agent.detectors import DetectorEvent
from hostward.agent.transport.outbox import Outbox
from hostward.core.clock import Clock
from hostward.core.ids import new_id
from hostward.wire import AssetsEvent, AssetSnapshot, CommandResult, ScanProgressEvent

log = logging.getLogger(__name__)

# Scan kinds this agent version can run, and what each collects. Later capabilities add their kinds.
ASSET_SCAN_KINDS: dict[str, tuple[str, ...]] = {"full": CATEGORIES, "asset": CATEGORIES}


class ScanCancelled(Exception):
    pass


class CheckUnavailable(Exception):
    """A scan check that does not apply here (its capability is off): a scan of its own kind fails with
    this message, a comprehensive scan skips it."""


# A detection run by scans of its kind and by every comprehensive ("full") scan: takes the job (it honours
# ``job.cancel``) and returns a one-line detail; its findings go to the outbox through its own channel.
ScanCheck = Callable[["ScanJob"], str]


@dataclass
class ScanJob:
    scan_id: str
    kind: str
    command_id: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    payload: dict[str, Any] = field(default_factory=dict)  # the scan command's payload (custom paths, ...)


class ScanQueue:
    """Scans waiting to run and the one running; a cancel finds its job in either place."""

    def __init__(self) -> None:
        self._pending: queue.Queue[ScanJob] = queue.Queue()
        self._lock = threading.Lock()
        self.current: ScanJob | None = None

    def submit(self, job: ScanJob) -> None:
        self._pending.put(job)

    def take(self, timeout: float | None = None) -> ScanJob | None:
        """The next job (``timeout=None``: do not wait); it becomes ``current`` until ``done``."""
        try:
            job = self._pending.get(timeout=timeout) if timeout else self._pending.get_nowait()
        except queue.Empty:
            return None
        self.current = job
        return job

    def done(self, job: ScanJob) -> None:
        if self.current is job:
            self.current = None

    def cancel(self, scan_id: object) -> str:
        """Flag the job; a queued one still runs, only to report itself cancelled and answer its command."""
        current = self.current
        if current is not None and current.scan_id == scan_id:
            current.cancel.set()
            return "cancelling"
        with self._lock, self._pending.mutex:
            for job in self._pending.queue:
                if job.scan_id == scan_id:
                    job.cancel.set()
                    return "cancelled before start"
        return "scan not running"

    def cancel_current(self) -> None:
        if self.current is not None:
            self.current.cancel.set()


Commit = Callable[[list[DetectorEvent]], None]
# The hook feeds the detectors and must call ``commit(detections)`` once, while it still holds whatever
# lock guards its baselines, then move the baselines: so a crash never loses an alarm.
SnapshotHook = Callable[[AssetSnapshot, datetime, Commit], None]


def _no_detectors(snapshot: AssetSnapshot, now: datetime, commit: Commit) -> None:
    commit([])


class ScanRunner:
    """Runs one scan synchronously; the runtime decides on which thread."""

    def __init__(
        self,
        collector: AssetCollector,
        outbox: Outbox,
        clock: Clock,
        on_snapshot: SnapshotHook = _no_detectors,
        throttle: Callable[[threading.Event], None] = lambda cancel: None,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self.collector = collector
        self.outbox = outbox
        self.clock = clock
        self.on_snapshot = on_snapshot
        self.throttle = throttle
        self.notify = notify
        self.checks: dict[str, ScanCheck] = {}

    def add_check(self, kind: str, check: ScanCheck) -> None:
        """Run ``check`` for scans of ``kind`` and inside every ``full`` scan."""
        if kind in ASSET_SCAN_KINDS or kind in self.checks:
            raise ValueError(f"scan kind {kind!r} already has a handler")
        self.checks[kind] = check

    def _progress(self, job: ScanJob, status: str, progress: int, detail: str = "") -> ScanProgressEvent:
        return ScanProgressEvent(
            key=new_id(),
            occurred_at=self.clock.now(),
            scan_id=job.scan_id,
            status=status,
            progress=max(0, min(100, progress)),
            detail=detail[:4096],
        )

    def _put(self, *events: BaseModel) -> None:
        self.outbox.put_many(events)
        self.notify()

    def run(self, job: ScanJob) -> CommandResult:
        categories = ASSET_SCAN_KINDS.get(job.kind)
        check = self.checks.get(job.kind)
        if categories is None and check is None:
            detail = f"scan kind {job.kind!r} is not supported by this agent version"
            self._put(self._progress(job, "failed", 100, detail))
            return CommandResult(status="failed", detail=detail, data={"scan_id": job.scan_id})
        if job.cancel.is_set():
            self._put(self._progress(job, "cancelled", 0, "cancelled before start"))
            return CommandResult(status="failed", detail="scan cancelled", data={"scan_id": job.scan_id})
        if categories is None:
            assert check is not None
            return self._run_check(job, check)
        self._put(self._progress(job, "running", 0))
        total = len(categories)
        reached = {"progress": 0}

        def checkpoint(category: str, index: int) -> None:
            if job.cancel.is_set():
                raise ScanCancelled
            self.throttle(job.cancel)
            if job.cancel.is_set():
                raise ScanCancelled
            if index:
                reached["progress"] = index * 90 // total
                self._put(self._progress(job, "running", reached["progress"], f"collecting {category}"))

        try:
            snapshot = self.collector.collect(self.clock.now(), categories, checkpoint)
        except ScanCancelled:
            self._put(self._progress(job, "cancelled", reached["progress"], "cancelled by request"))
            return CommandResult(status="failed", detail="scan cancelled", data={"scan_id": job.scan_id})
        except Exception as exc:
            log.exception("scan %s failed", job.scan_id)
            detail = f"{type(exc).__name__}: {exc}"
            self._put(self._progress(job, "failed", reached["progress"], detail))
            return CommandResult(status="failed", detail=detail[:4096], data={"scan_id": job.scan_id})

        counts = {c: len(getattr(snapshot, c)) for c in categories}
        try:
            checked = self._full_checks(job) if job.kind == "full" else []
        except ScanCancelled:
            self._put(self._progress(job, "cancelled", reached["progress"], "cancelled by request"))
            return CommandResult(status="failed", detail="scan cancelled", data={"scan_id": job.scan_id})
        outcome: list[CommandResult] = []

        def commit(detections: list[DetectorEvent]) -> None:
            if outcome:
                raise RuntimeError("scan results committed twice")
            status, detail = self._summary(snapshot, categories, counts, len(detections))
            if checked:
                detail = "; ".join([detail, *checked])
            assets = AssetsEvent(
                key=new_id(), occurred_at=snapshot.collected_at, scan_id=job.scan_id, snapshot=snapshot
            )
            self._put(assets, *detections, self._progress(job, status, 100, detail))
            outcome.append(
                CommandResult(
                    status=status,
                    detail=detail[:4096],
                    data={
                        "scan_id": job.scan_id,
                        "counts": counts,
                        "errors": snapshot.errors,
                        "detections": len(detections),
                    },
                )
            )

        try:
            self.on_snapshot(snapshot, self.clock.now(), commit)
        except Exception:
            log.exception("scan %s: detectors failed on the snapshot", job.scan_id)
        if not outcome:
            commit([])
        return outcome[0]

    def _run_check(self, job: ScanJob, check: ScanCheck) -> CommandResult:
        """A scan of a check's own kind: running, then the check's detail as the result."""
        self._put(self._progress(job, "running", 0))
        try:
            detail = check(job)
        except CheckUnavailable as exc:
            status, detail = "failed", str(exc)
        except Exception as exc:
            if job.cancel.is_set():
                self._put(self._progress(job, "cancelled", 0, "cancelled by request"))
                return CommandResult(status="failed", detail="scan cancelled", data={"scan_id": job.scan_id})
            log.exception("scan %s: %s check failed", job.scan_id, job.kind)
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        else:
            status = "succeeded"
        self._put(self._progress(job, status, 100, detail))
        return CommandResult(status=status, detail=detail[:4096], data={"scan_id": job.scan_id})

    def _full_checks(self, job: ScanJob) -> list[str]:
        """Every registered check, inside a comprehensive scan; one failing check does not fail the scan."""
        details = []
        for kind, check in self.checks.items():
            if job.cancel.is_set():
                raise ScanCancelled
            self.throttle(job.cancel)
            try:
                details.append(check(job))
            except CheckUnavailable:
                continue
            except Exception as exc:
                if job.cancel.is_set():
                    raise ScanCancelled from exc
                log.exception("scan %s: %s check failed", job.scan_id, kind)
                details.append(f"{kind} check failed: {type(exc).__name__}: {exc}")
        return details

    @staticmethod
    def _summary(
        snapshot: AssetSnapshot, categories: tuple[str, ...], counts: dict[str, int], detections: int
    ) -> tuple[str, str]:
        failed = sorted(snapshot.errors)
        if len(failed) == len(categories):
            return "failed", "every asset category failed: " + "; ".join(snapshot.errors.values())
        detail = f"collected {sum(counts.values())} assets"
        if failed:
            detail += f"; unavailable: {', '.join(failed)}"
        if detections:
            detail += f"; {detections} detection(s)"
        return "succeeded", detail
