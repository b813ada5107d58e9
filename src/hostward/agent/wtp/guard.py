"""The web tamper protection engine: backup, lock, watch and restore.

``WtpGuard.enable()`` backs the protected trees up first (protection is only reported on once the
backup exists), sets the immutable attribute on every protected file and directory, and starts a
thread that watches the trees with inotify (and fanotify, to name the writer). Any change that still
happens — the attribute removed and the file written, a raced write, a deleted or created file — is
reconciled against the backup at once: content, mode and owner restored and the lock set again;
unexpected new files are moved to a holding area under the backup directory, never deleted.
Reconciliation compares with the backup rather than trusting the event, so the guard's own
restores, repeated events and overflow rescans are all harmless.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hostward.agent.fim import inotify as ino
from hostward.agent.fim.fanotify import FAN_CLOSE_WRITE, FAN_MODIFY, Fanotify, Writer
from hostward.agent.wtp.backup import (
    BackupError,
    BlobStore,
    Entry,
    Manifest,
    capture,
    hold,
    load_manifest,
    matches,
    save_manifest,
    walk,
    write_entry,
)
from hostward.agent.wtp.config import ProtectedDir, WtpConfig, WtpError, validate
from hostward.agent.wtp.events import (
    WATCH_MASK,
    WriterCache,
    display_path,
    process_dict,
    tamper_action,
    tamper_alarm,
)
from hostward.agent.wtp.immutable import Immutability, ImmutableUnsupported, KernelImmutability, probe
from hostward.agent.wtp.schedule import is_unprotected
from hostward.core.clock import Clock, SystemClock
from hostward.wire.protocol import AlarmEvent

log = logging.getLogger(__name__)

TMP_PREFIX = ".hw-wtp-"
ATTRIBUTION_WAIT_S = 0.2
NO_IMMUTABLE = "immutable not supported; watch-and-restore only"

EventSink = Callable[[dict[str, Any], AlarmEvent], None]


@dataclass
class WtpStatus:
    """What the server page shows: ``state`` is protected, unprotected_window, disabled or error."""

    state: str
    message: str = ""
    immutable: dict[str, bool] = field(default_factory=dict)
    suspended: list[str] = field(default_factory=list)
    tamper_count: int = 0
    backup_at: str | None = None


class WtpGuard:
    """One server's web tamper protection. Thread-safe; the watcher runs on its own thread."""

    def __init__(
        self,
        config: WtpConfig,
        *,
        immutability: Immutability | None = None,
        clock: Clock | None = None,
        on_event: EventSink | None = None,
        use_fanotify: bool = True,
    ) -> None:
        self.config = validate(config)
        self.immutability = immutability or KernelImmutability()
        self.clock = clock or SystemClock()
        self.on_event = on_event
        self.use_fanotify = use_fanotify
        self.events: list[dict[str, Any]] = []
        self.latencies_ms: list[float] = []
        self._manifest: Manifest = {}
        self._immutable: dict[str, bool] = {}
        self._state = "disabled"
        self._message = ""
        self._backup_at: str | None = None
        self._privileged = 0
        self._session_pids: list[int] = []
        self._window = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ino: ino.Inotify | None = None
        self._fan: Fanotify | None = None
        self._wds: dict[int, str] = {}
        self._writers = WriterCache()
        self._unattributed: list[tuple[dict[str, Any], float]] = []
        self.store: BlobStore | None = None
        # paths the agent itself keeps inside protected trees (ransomware bait files): never backed
        # up, locked or rolled back; see ``place``
        self.foreign: set[str] = set()

    # ---- lifecycle ------------------------------------------------------------------------------

    def enable(self) -> WtpStatus:
        """Back up, lock and watch; on a backup failure nothing is locked and the status says why."""
        with self._lock:
            try:
                self.refresh_backup()
            except BackupError as exc:
                self._state, self._message = "error", f"{exc.code}: {exc}"
                return self.status()
            self._immutable = {}
            for d in self._active_dirs():
                self._immutable[d.path] = probe(d.path, self.immutability)
            self._lock_all()
            self._state = "protected"
            missing = [p for p, ok in self._immutable.items() if not ok]
            self._message = f"{NO_IMMUTABLE}: {', '.join(missing)}" if missing else ""
        self._start_watch()
        return self.status()

    def disable(self) -> WtpStatus:
        """Stop watching and unlock everything; the configuration and backup are kept."""
        self.stop()
        with self._lock:
            self._unlock_all()
            self._state, self._message = "disabled", ""
        return self.status()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for h in (self._ino, self._fan):
            if h is not None:
                h.close()
        self._ino = self._fan = None
        self._wds = {}
        self._stop.clear()

    def status(self) -> WtpStatus:
        with self._lock:
            return WtpStatus(
                state=self._state,
                message=self._message,
                immutable=dict(self._immutable),
                suspended=[d.path for d in self.config.dirs if d.suspended],
                tamper_count=len(self.events),
                backup_at=self._backup_at,
            )

    # ---- backup ---------------------------------------------------------------------------------

    def _skip(self, d: ProtectedDir) -> Callable[[str], bool]:
        """What the guard leaves alone under ``d``: its exclusions and the agent's own files."""
        foreign = self.foreign
        return lambda p: d.is_excluded(p) or p in foreign

    def _active_dirs(self) -> list[ProtectedDir]:
        return [d for d in self.config.dirs if not d.suspended]

    def refresh_backup(self) -> None:
        """Capture every active protected directory; raises ``BackupError`` (disk full, ...)."""
        with self._lock:
            self.store = BlobStore(self.config.backup_path)
            manifest: Manifest = {}
            for d in self._active_dirs():
                if not os.path.isdir(d.path):
                    raise WtpError(f"{d.path}: protected directory does not exist")
                manifest.update(capture(self.store, d.path, self._skip(d)))
            mpath = os.path.join(self.config.backup_path, "manifest.json")
            save_manifest(mpath, manifest, {"taken_at": self.clock.now().isoformat()})
            self._manifest = manifest
            self._backup_at = self.clock.now().isoformat()
            self.store.gc({e.sha256 for e in manifest.values() if e.sha256})

    def load_backup(self) -> None:
        """Use the manifest already on disk (agent restart)."""
        self.store = BlobStore(self.config.backup_path)
        self._manifest, meta = load_manifest(os.path.join(self.config.backup_path, "manifest.json"))
        for path in self.foreign:
            self._manifest.pop(path, None)
        self._backup_at = str(meta.get("taken_at") or "") or None

    # ---- locking --------------------------------------------------------------------------------

    def _set(self, path: str, on: bool) -> None:
        d = self.config.dir_for(path)
        if d is None or not self._immutable.get(d.path, False):
            return
        try:
            if os.path.islink(path):
                return
            self.immutability.set_immutable(path, on)
        except FileNotFoundError:
            pass
        except ImmutableUnsupported:
            self._immutable[d.path] = False

    def _lock_all(self, only: ProtectedDir | None = None) -> None:
        for path, entry in self._manifest.items():
            d = self.config.dir_for(path)
            if d is None or d.suspended or (only is not None and d is not only) or entry.kind == "symlink":
                continue
            self._set(path, True)

    def _unlock_tree(self, d: ProtectedDir) -> None:
        for path, st in walk(d.path, self._skip(d)):
            if not stat.S_ISLNK(st.st_mode):
                try:
                    self.immutability.set_immutable(path, False)
                except (ImmutableUnsupported, FileNotFoundError):
                    pass

    def _unlock_all(self) -> None:
        for d in self.config.dirs:
            if os.path.isdir(d.path):
                self._unlock_tree(d)

    def suspend(self, path: str) -> None:
        """Stop protecting one directory (unlocked, not watched, not restored)."""
        with self._lock:
            d = self._find(path)
            d.suspended = True
            self._unlock_tree(d)

    def resume(self, path: str) -> None:
        """Protect a suspended directory again (fresh backup of it, then lock)."""
        with self._lock:
            d = self._find(path)
            d.suspended = False
            if self.store is None:
                self.store = BlobStore(self.config.backup_path)
            for p in [p for p in self._manifest if self.config.dir_for(p) is d]:
                del self._manifest[p]
            self._manifest.update(capture(self.store, d.path, self._skip(d)))
            self._immutable[d.path] = probe(d.path, self.immutability)
            self._lock_all(only=d)
        self._rewatch()

    def _find(self, path: str) -> ProtectedDir:
        norm = os.path.normpath(path)
        for d in self.config.dirs:
            if d.path == norm:
                return d
        raise WtpError(f"{path}: not a protected directory")

    @contextmanager
    def place(self, path: str) -> Iterator[None]:
        """Let the agent itself create, rewrite or delete ``path`` inside a protected tree (a ransomware
        bait file). From now on the path is left out of the backup, the lock and the rollback; for the
        duration the locks of the path and of its parent directory are lifted (the watcher waits: it
        reconciles under the same lock) and the parent is locked again afterwards."""
        path = os.path.normpath(path)
        parent = os.path.dirname(path)
        with self._lock:
            self.foreign.add(path)
            self._manifest.pop(path, None)
            d = self.config.dir_for(path)
            locked = (
                d is not None
                and not d.suspended
                and self._state == "protected"
                and not self._privileged
                and not self._window
                and self._immutable.get(d.path, False)
            )
            if locked and os.path.lexists(path) and not os.path.islink(path):
                try:
                    self.immutability.set_immutable(path, False)
                except (OSError, ImmutableUnsupported):
                    pass
            relock = locked and parent in self._manifest
            if relock:
                self._set(parent, False)
            try:
                yield
            finally:
                if relock:
                    self._set(parent, True)

    @contextmanager
    def privileged(self, session_pid: int | None = None) -> Iterator[None]:
        """Lift the lock while a privileged command runs; refresh the backup and re-lock afterwards.

        Writes during the session by a process fanotify names and whose executable is not privileged
        are still rolled back, unless the process was started by ``session_pid`` (the ``wtp exec``
        that runs the command: its direct child always, deeper descendants with
        ``privileged_children``) — so a privileged script, whose processes run an interpreter, works.
        """
        with self._lock:
            self._privileged += 1
            if session_pid is not None:
                self._session_pids.append(session_pid)
                self._writers.track_lineage = True
            self._unlock_all()
        try:
            yield
        finally:
            with self._lock:
                if session_pid is not None:
                    self._session_pids.remove(session_pid)
                    self._writers.track_lineage = bool(self._session_pids)
                self._privileged -= 1
                if self._privileged == 0:
                    try:
                        self.refresh_backup()
                    finally:
                        self._lock_all()
            self._rewatch()

    def apply_schedule(self, now_local: datetime) -> bool:
        """Open or close a scheduled unprotected window; returns whether the tree is unprotected now."""
        open_now = is_unprotected(now_local, self.config.schedule)
        with self._lock:
            if open_now and not self._window:
                self._window = True
                self._unlock_all()
                self._state = "unprotected_window"
            elif not open_now and self._window:
                self._window = False
                self.refresh_backup()
                self._lock_all()
                self._state = "protected"
        if not open_now:
            self._rewatch()
        return open_now

    # ---- watching -------------------------------------------------------------------------------

    def _start_watch(self) -> None:
        if self._thread is not None:
            return
        self._ino = ino.Inotify()
        if self.use_fanotify:
            try:
                self._fan = Fanotify.open()
            except OSError as exc:
                log.info("fanotify unavailable, writers will be unknown: %s", exc)
                self._fan = None
        self._rewatch()
        self._thread = threading.Thread(target=self._run, name="wtp-watch", daemon=True)
        self._thread.start()

    def _rewatch(self) -> None:
        with self._lock:
            if self._ino is None:
                return
            known = set(self._wds.values())
            for path, entry in self._manifest.items():
                if entry.kind != "dir" or path in known:
                    continue
                try:
                    wd = self._ino.add_watch(os.fsencode(path), WATCH_MASK)
                    self._wds[wd] = path
                    if self._fan is not None:
                        self._fan.mark_dir(os.fsencode(path), FAN_MODIFY | FAN_CLOSE_WRITE)
                except OSError as exc:
                    log.warning("wtp: cannot watch %s: %s", path, exc)

    def _run(self) -> None:
        poller = select.poll()
        assert self._ino is not None
        poller.register(self._ino.fd, select.POLLIN)
        if self._fan is not None:
            poller.register(self._fan.fd, select.POLLIN)
        while not self._stop.is_set():
            ready = poller.poll(20 if self._unattributed else 200)
            try:
                if ready:
                    self.step()
                self._flush_unattributed()
            except Exception:  # keep protecting: one bad event must not end the watcher
                log.exception("wtp: reconcile failed")
        for record, _ in self._unattributed:
            self._emit(record, None)
        self._unattributed = []

    def step(self) -> None:
        """Read what is pending and reconcile every touched path (one iteration of the watcher)."""
        started = time.monotonic()
        if self._fan is not None:
            self._writers.feed(self._fan.read())
        if self._ino is None:
            return
        pending: dict[str, str] = {}
        overflow = False
        for ev in self._ino.read():
            if ev.mask & ino.IN_Q_OVERFLOW:
                overflow = True
                continue
            base = self._wds.get(ev.wd)
            if ev.mask & ino.IN_IGNORED:
                self._wds.pop(ev.wd, None)
                continue
            if base is None:
                continue
            name = os.fsdecode(ev.name)
            if name.startswith(TMP_PREFIX):
                continue
            path = os.path.join(base, name) if name else base
            pending.setdefault(path, tamper_action(ev.mask))
        if self._fan is not None:
            self._writers.feed(self._fan.read())
        if overflow:
            # events were lost: compare the whole tree with the backup
            self.reconcile_all()
        for path, action in pending.items():
            self.reconcile(path, action, started)
        if pending:
            self._rewatch()

    def _trusted(self, writer: Writer | None) -> bool:
        if writer is None or not writer.exe:
            # the writer is unknown or already gone: inside a privileged session, give it the benefit
            return True
        privileged = {os.path.realpath(p) for p in self.config.privileged}
        if writer.exe and os.path.realpath(writer.exe) in privileged:
            return True
        if self._session_pids:
            lineage = self._writers.lineage(writer.pid)
            if lineage and lineage[0] in self._session_pids:
                return True  # the command `wtp exec` started
            if self.config.privileged_children and set(lineage) & set(self._session_pids):
                return True
        if self.config.privileged_children:
            from hostward.agent.wtp.privileged import ancestor_exes

            return bool(ancestor_exes(writer.pid) & privileged)
        return False

    def reconcile(self, path: str, action: str = "modified", started: float | None = None) -> None:
        """Make ``path`` match the backup again, recording a tamper event when it did not."""
        started = time.monotonic() if started is None else started
        with self._lock:
            d = self.config.dir_for(path)
            if d is None or d.suspended or self._skip(d)(path) or self._state != "protected":
                return
            writer = self._writers.get(path)
            if self._privileged and self._trusted(writer):
                return
            entry = self._manifest.get(path)
            record: dict[str, Any] | None
            if entry is None:
                record = self._remove_unexpected(d, path, action)
            else:
                record = self._restore(d, path, entry, action)
        if record is not None:
            latency = (time.monotonic() - started) * 1000
            self.latencies_ms.append(latency)
            record.update(
                directory=d.path, latency_ms=round(latency, 2), occurred_at=self.clock.now().isoformat()
            )
            if writer is None and self._fan is not None:
                # the restore can win against a write still in flight (a truncating open is not
                # reported by fanotify): wait a moment for the write's event to name the process
                self._unattributed.append((record, time.monotonic() + ATTRIBUTION_WAIT_S))
            else:
                self._emit(record, writer)

    def _emit(self, record: dict[str, Any], writer: Writer | None) -> None:
        record["process"] = process_dict(writer)
        self._writers.forget(record["path"])
        for key in ("path", "directory", "moved_to"):
            if isinstance(record.get(key), str):
                record[key] = display_path(record[key])
        with self._lock:
            self.events.append(record)
        if self.on_event is not None:
            self.on_event(record, tamper_alarm(record, self.clock.now()))

    def _flush_unattributed(self) -> None:
        if not self._unattributed:
            return
        if self._fan is not None:
            self._writers.feed(self._fan.read())
        now = time.monotonic()
        keep: list[tuple[dict[str, Any], float]] = []
        for record, deadline in self._unattributed:
            writer = self._writers.get(record["path"])
            if writer is not None or now >= deadline:
                self._emit(record, writer)
            else:
                keep.append((record, deadline))
        self._unattributed = keep

    def _locked_ok(self, d: ProtectedDir, path: str, entry: Entry) -> bool:
        if entry.kind == "symlink" or not self._immutable.get(d.path) or self._privileged or self._window:
            return True
        try:
            return self.immutability.is_immutable(path)
        except (OSError, ImmutableUnsupported):
            return False

    @contextmanager
    def _parent_open(self, path: str) -> Iterator[None]:
        parent = os.path.dirname(path)
        managed = parent in self._manifest
        if managed:
            self._set(parent, False)
        try:
            yield
        finally:
            if managed and not self._privileged and not self._window:
                self._set(parent, True)

    def _restore(self, d: ProtectedDir, path: str, entry: Entry, action: str) -> dict[str, Any] | None:
        if matches(path, entry):
            if self._locked_ok(d, path, entry):
                return None
            self._set(path, True)
            return {"path": path, "action": "attributes", "outcome": "relocked"}
        assert self.store is not None
        existed = os.path.lexists(path)
        if existed and not os.path.islink(path):
            try:
                self.immutability.set_immutable(path, False)
            except (OSError, ImmutableUnsupported):
                pass
        with self._parent_open(path):
            if existed and entry.kind != "dir" and os.path.isdir(path) and not os.path.islink(path):
                self._hold(path)
            write_entry(self.store, path, entry, TMP_PREFIX)
        if entry.kind == "dir":
            # a deleted directory comes back with everything that was below it
            prefix = path.rstrip("/") + "/"
            for sub in sorted(p for p in self._manifest if p.startswith(prefix)):
                sub_entry = self._manifest[sub]
                if not matches(sub, sub_entry):
                    with self._parent_open(sub):
                        write_entry(self.store, sub, sub_entry, TMP_PREFIX)
                if sub_entry.kind != "symlink" and not self._privileged and not self._window:
                    self._set(sub, True)
        if not self._privileged and not self._window:
            self._set(path, True)
        if action == "attributes" and existed:
            action = "modified" if entry.kind == "file" else "attributes"
        return {"path": path, "action": "deleted" if not existed else action, "outcome": "restored"}

    def _hold(self, path: str) -> str:
        """Move an unexpected file or directory into the tamper holding area; returns where."""

        def unlock(p: str) -> None:
            try:
                self.immutability.set_immutable(p, False)
            except (OSError, ImmutableUnsupported):
                pass

        return hold(path, os.path.join(self.config.backup_path, "tamper"), unlock)

    def _remove_unexpected(self, d: ProtectedDir, path: str, action: str) -> dict[str, Any] | None:
        if not os.path.lexists(path):
            return None
        with self._parent_open(path):
            try:
                dest = self._hold(path)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return None
                raise
        return {"path": path, "action": "created", "outcome": "removed", "moved_to": dest}

    def reconcile_all(self) -> None:
        """Check the whole protected tree against the backup (overflow, daily scan, start-up)."""
        for d in self._active_dirs():
            for path, _st in list(walk(d.path, self._skip(d))):
                self.reconcile(path, "modified")
        for path in list(self._manifest):
            if not os.path.lexists(path):
                self.reconcile(path, "deleted")
