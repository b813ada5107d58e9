"""The agent's ``WtpGuard``: restart from the backup on disk, privileged writes outside ``wtp exec``.

- ``enable_from_backup()`` protects with the manifest already on disk (agent restart, same
  configuration): no new capture, then the whole tree is reconciled, so a change made while the agent
  was down is rolled back rather than baked into the backup.
- A write fanotify attributes to a privileged program outside a session is taken into the backup
  (``adopted``) instead of being rolled back; such writes only get through where the lock does not hold.
- A privileged session starts with no remembered writers (see ``privileged``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hostward.agent.wtp import NO_IMMUTABLE, WtpGuard, WtpStatus
from hostward.agent.wtp.backup import Entry, capture, save_manifest
from hostward.agent.wtp.events import WriterCache
from hostward.agent.wtp.immutable import probe

log = logging.getLogger(__name__)

DEFER_S = 0.1


class RunnerGuard(WtpGuard):
    """The engine's guard plus what the agent needs around a restart and the remote backup."""

    adopted = 0  # writes of privileged programs taken into the backup outside a session

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._deferred: dict[str, tuple[str, float, float]] = {}

    def enable_from_backup(self) -> WtpStatus:
        """Protect with the backup already on disk (agent restart): no new capture of the tree."""
        with self._lock:
            self.load_backup()
            assert self.store is not None
            fresh = [d for d in self._active_dirs() if d.path not in self._manifest]
            for d in fresh:  # suspended when the backup was taken: capture it now
                self._manifest.update(capture(self.store, d.path, self._skip(d)))
            if fresh:
                mpath = os.path.join(self.config.backup_path, "manifest.json")
                save_manifest(
                    mpath, self._manifest, {"taken_at": self._backup_at or self.clock.now().isoformat()}
                )
            self._immutable = {d.path: probe(d.path, self.immutability) for d in self._active_dirs()}
            self._lock_all()
            self._state = "protected"
            missing = [p for p, ok in self._immutable.items() if not ok]
            self._message = f"{NO_IMMUTABLE}: {', '.join(missing)}" if missing else ""
        self._start_watch()
        self.reconcile_all()
        return self.status()

    def manifest(self) -> dict[str, Entry]:
        with self._lock:
            return dict(self._manifest)

    @contextmanager
    def privileged(self, session_pid: int | None = None) -> Iterator[None]:
        """As the engine's, starting with no remembered writers: a tamperer's late close event must not
        be taken for the author of the privileged program's first write (its truncating open is not
        reported by fanotify), which would roll that write back."""
        with self._lock:
            self._writers = WriterCache()
        try:
            with super().privileged(session_pid):
                yield
        finally:
            with self._lock:
                if not self._privileged:
                    # the backup holds what the session wrote: its writers must not vouch for a later
                    # change of the same paths (within the cache's time to live)
                    self._writers = WriterCache()

    def reconcile(self, path: str, action: str = "modified", started: float | None = None) -> None:
        """As the engine's, except that a write fanotify attributes to a privileged program outside a
        ``wtp exec`` session is taken into the backup instead of rolled back. Such writes only get
        through where the lock does not hold (a filesystem without the immutable flag); there a change
        nobody is named for yet (a truncating open, which fanotify does not report) waits up to
        ``DEFER_S`` for the write that names its author before it is rolled back."""
        writer = self._writers.get(path)
        # fanotify names writers, never who deletes: a missing path is not vouched for by a recent writer
        trusted = (
            writer is not None
            and bool(writer.exe)
            and not self._privileged
            and os.path.lexists(path)
            and self._trusted(writer)
        )
        if trusted and writer is not None and self._adopt(path, writer.exe):
            return
        if writer is None and self._may_defer(path):
            self._deferred.setdefault(path, (action, started or time.monotonic(), time.monotonic() + DEFER_S))
            return
        super().reconcile(path, action, started)

    def _may_defer(self, path: str) -> bool:
        if self._fan is None or not self.config.privileged or self._window:
            return False
        if self._privileged:
            # in a `wtp exec` session an unnamed writer is let through: wait for its name first, so a
            # write whose fanotify event lags behind inotify is still judged by who made it
            d = self.config.dir_for(path)
            return d is not None and not d.suspended and self._state == "protected"
        d = self.config.dir_for(path)
        return d is not None and not self._immutable.get(d.path, False)

    def _flush_unattributed(self) -> None:
        if self._deferred:
            if self._fan is not None:
                self._writers.feed(self._fan.read())
            now = time.monotonic()
            due = {p: v for p, v in self._deferred.items() if now >= v[2] or self._writers.get(p) is not None}
            for path in due:
                del self._deferred[path]
            for path, (action, started, _deadline) in due.items():
                writer = self._writers.get(path)
                if (
                    writer is not None
                    and writer.exe
                    and not self._privileged
                    and self._trusted(writer)
                    and self._adopt(path, writer.exe)
                ):
                    continue
                WtpGuard.reconcile(self, path, action, started)
        super()._flush_unattributed()

    def _adopt(self, path: str, exe: str) -> bool:
        with self._lock:
            d = self.config.dir_for(path)
            if (
                d is None
                or d.suspended
                or self._skip(d)(path)
                or self._state != "protected"
                or self.store is None
            ):
                return False
            if not os.path.lexists(path):
                return False  # deleted since the write: roll the deletion back (see ``reconcile``)
            self._manifest.update(capture(self.store, path, self._skip(d)))
            mpath = os.path.join(self.config.backup_path, "manifest.json")
            save_manifest(mpath, self._manifest, {"taken_at": self.clock.now().isoformat()})
            self._backup_at = self.clock.now().isoformat()
            self.adopted += 1
            self._writers.forget(path)
        log.info("wtp: %s changed by privileged %s: backup updated", path, exe)
        return True
