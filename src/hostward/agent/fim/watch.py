"""Realtime FIM: inotify watches (plus fanotify for the writer) -> ``FimEngine.check_paths`` -> callback.

One thread reads both descriptors. Directory roots get a watch on every directory of their tree
(symlinks never followed, ignored directories skipped); file roots and roots that do not exist yet are
watched through their nearest existing parent, so ``/root/.ssh/authorized_keys`` is noticed when
``/root/.ssh`` is created. Directories created or moved into a tree get watches as they appear.

Writes are settled: a file is checked on ``IN_CLOSE_WRITE`` (or ``settle_s`` after its last
``IN_MODIFY``/``IN_CREATE`` when nobody closes it), attribute changes, deletes and renames at once.

Limits: ``IN_Q_OVERFLOW`` (the kernel dropped events) triggers a quick check of every root and a new
watch plan; running out of watches (``ENOSPC``) raises ``fs.inotify.max_user_watches`` when we are
root, otherwise the directories left unwatched are counted and reported in ``health()`` (the
scheduled check still covers them). fanotify (root only) names the process behind a write; where it
is unavailable the watcher runs without it and says so in ``health()``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from hostward.agent.fim import inotify as ino
from hostward.agent.fim.diff import Change, ProcessInfo
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.fanotify import Fanotify, describe_process

log = logging.getLogger(__name__)

DIR_MASK = (
    ino.IN_MODIFY
    | ino.IN_ATTRIB
    | ino.IN_CLOSE_WRITE
    | ino.IN_MOVED_FROM
    | ino.IN_MOVED_TO
    | ino.IN_CREATE
    | ino.IN_DELETE
    | ino.IN_DELETE_SELF
    | ino.IN_MOVE_SELF
    | ino.IN_EXCL_UNLINK
    | ino.IN_ONLYDIR
)
_NOW = ino.IN_CLOSE_WRITE | ino.IN_ATTRIB | ino.IN_DELETE | ino.IN_MOVED_FROM | ino.IN_MOVED_TO
_SETTLE = ino.IN_MODIFY | ino.IN_CREATE
WRITER_TTL_S = 10.0
MAX_WATCH_LIMIT = 4 * 1024 * 1024

ChangeCallback = Callable[[list[Change]], None]


@dataclass
class WatchHealth:
    status: Literal["running", "degraded", "failed", "stopped"]
    reasons: list[str]
    counters: dict[str, int] = field(default_factory=dict)


class FimWatcher:
    """Watches the engine's roots and reports classified changes to ``on_changes`` (watcher thread).

    ``start()`` plans the watches and starts the thread; ``stop()`` is idempotent. ``on_changes`` must
    be quick (queue the events): while it runs no events are read.
    """

    def __init__(
        self,
        engine: FimEngine,
        on_changes: ChangeCallback,
        *,
        use_fanotify: bool = True,
        settle_s: float = 0.2,
        poll_s: float = 1.0,
        raise_limit: bool = True,
        max_watch_limit: int = MAX_WATCH_LIMIT,
    ) -> None:
        self.engine = engine
        self.on_changes = on_changes
        self.use_fanotify = use_fanotify
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.raise_limit = raise_limit
        self.max_watch_limit = max_watch_limit
        self._inotify: ino.Inotify | None = None
        self._fan: Fanotify | None = None
        self._fan_reason = "disabled"
        self._wd_paths: dict[int, set[bytes]] = {}
        self._path_wd: dict[bytes, int] = {}
        self._canon: dict[bytes, set[bytes]] = {}  # real directory path -> watched aliases
        self._writers: dict[bytes, tuple[ProcessInfo, float]] = {}
        self._pending: dict[bytes, float] = {}  # path -> deadline (settling writes)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = -1, -1
        self._unwatched: set[bytes] = set()
        self._limit_note = ""
        self._last_error = ""
        self._failed = ""
        self.counters: dict[str, int] = {
            "events": 0,
            "overflows": 0,
            "rescans": 0,
            "changes": 0,
            "errors": 0,
            "limit_raised": 0,
        }

    # ---- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            self._inotify = ino.Inotify()
        except OSError as exc:
            self._failed = f"inotify unavailable: {exc.strerror or exc}"
            raise
        if self.use_fanotify:
            try:
                self._fan = Fanotify.open()
                self._fan_reason = ""
            except OSError as exc:
                self._fan = None
                self._fan_reason = f"fanotify unavailable ({exc.strerror or exc}): writers are not identified"
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.plan()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fim-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        thread.join(timeout)
        self._thread = None
        for closer in (self._inotify, self._fan):
            if closer is not None:
                closer.close()
        self._inotify = None
        self._fan = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self._wd_paths.clear()
        self._path_wd.clear()
        self._canon.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> WatchHealth:
        reasons: list[str] = []
        status: Literal["running", "degraded", "failed", "stopped"] = "running"
        if self._failed:
            return WatchHealth("failed", [self._failed], dict(self.counters))
        if not self.running:
            status = "stopped"
        if self._unwatched:
            status = "degraded" if status == "running" else status
            reasons.append(
                f"inotify watch limit reached: {len(self._unwatched)} directories not watched in real time "
                f"(fs.inotify.max_user_watches={ino.read_limit(ino.MAX_USER_WATCHES)}{self._limit_note}); "
                "the scheduled check still covers them"
            )
        if self.use_fanotify and self._fan is None and self._fan_reason:
            reasons.append(self._fan_reason)
        if self._last_error:
            reasons.append(f"last error: {self._last_error}")
        counters = dict(self.counters)
        counters.update(
            watches=len(self._path_wd), unwatched=len(self._unwatched), fanotify=int(self._fan is not None)
        )
        return WatchHealth(status, reasons, counters)

    # ---- watch planning -------------------------------------------------------------------------

    def plan(self) -> None:
        """(Re)create watches for every root: trees, parents of file roots, anchors of missing roots."""
        self._unwatched.clear()
        for root in self.engine.roots:
            try:
                st = os.lstat(root.path)
            except OSError:
                st = None
            parent = root.path.rpartition(b"/")[0] or b"/"
            if st is not None and stat.S_ISDIR(st.st_mode):
                self._watch_tree(root.path, recursive=root.recursive)
                self._anchor(parent)  # notices the root itself being removed and created again
            elif st is not None:
                self._anchor(parent)
            else:
                self._anchor(parent)

    def _anchor(self, path: bytes) -> None:
        """Watch the nearest existing directory at or above ``path`` (follows symlinked parents)."""
        cur = path
        while True:
            if os.path.isdir(cur):
                self._add(cur, follow=True)
                return
            if cur == b"/":
                return
            cur = cur.rpartition(b"/")[0] or b"/"

    def _watch_tree(self, top: bytes, *, recursive: bool) -> None:
        engine = self.engine
        stack = [top]
        while stack:
            d = stack.pop()
            if not self._add(d, follow=False) or not recursive:
                continue
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            child = (d if d != b"/" else b"") + b"/" + os.fsencode(e.name)
                            if engine.rootset.owner(child) is not None:
                                stack.append(child)
            except OSError:
                continue

    def _add(self, path: bytes, *, follow: bool) -> bool:
        inotify = self._inotify
        if inotify is None:
            return False
        mask = DIR_MASK if follow else DIR_MASK | ino.IN_DONT_FOLLOW
        while True:
            try:
                wd = inotify.add_watch(path, mask)
                break
            except OSError as exc:
                if exc.errno == errno.ENOSPC and self._raise_watch_limit():
                    continue
                if exc.errno in (errno.ENOSPC, errno.ENOMEM):
                    self._unwatched.add(path)
                return False
        self._unwatched.discard(path)
        self._wd_paths.setdefault(wd, set()).add(path)
        self._path_wd[path] = wd
        if self._fan is not None:
            # fanotify names files by their real path; map it back to the watched spelling(s).
            self._canon.setdefault(os.path.realpath(path), set()).add(path)
            try:
                self._fan.mark_dir(path)
            except OSError as exc:
                self._fan_reason = f"fanotify mark failed on some directories ({exc.strerror})"
        return True

    def _raise_watch_limit(self) -> bool:
        if not self.raise_limit or os.geteuid() != 0:
            self._limit_note = "; not root, so not raised"
            return False
        current = ino.read_limit(ino.MAX_USER_WATCHES)
        if current is None or current >= self.max_watch_limit:
            self._limit_note = f"; at the configured ceiling {self.max_watch_limit}"
            return False
        new = min(current * 2, self.max_watch_limit)
        if not ino.write_limit(ino.MAX_USER_WATCHES, new):
            self._limit_note = "; raising it failed"
            return False
        log.warning("fim: raised fs.inotify.max_user_watches from %d to %d", current, new)
        self.counters["limit_raised"] += 1
        return True

    def _forget_under(self, path: bytes) -> None:
        prefix = path + b"/"
        inotify = self._inotify
        for p in [p for p in self._path_wd if p == path or p.startswith(prefix)]:
            wd = self._path_wd.pop(p)
            aliases = self._wd_paths.get(wd)
            if aliases is not None:
                aliases.discard(p)
                if not aliases:
                    del self._wd_paths[wd]
                    if inotify is not None:
                        try:
                            inotify.rm_watch(wd)
                        except OSError:
                            pass

    # ---- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._inotify is not None
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        if self._fan is not None:
            poller.register(self._fan.fd, select.POLLIN)
        last_poll = time.monotonic()
        while not self._stop.is_set():
            timeout = self.poll_s
            if self._pending:
                timeout = max(0.0, min(self._pending.values()) - time.monotonic())
            try:
                poller.poll(timeout * 1000)
            except InterruptedError:
                continue
            if self._stop.is_set():
                break
            try:
                self._step()
                now = time.monotonic()
                if now - last_poll >= self.poll_s:
                    last_poll = now
                    self._emit(self.engine.poll())
                    self._prune_writers(now)
            except Exception as exc:  # keep watching; the failure shows in health()
                log.exception("fim watcher step failed")
                self.counters["errors"] += 1
                self._last_error = f"{type(exc).__name__}: {exc}"[:300]

    def _step(self) -> None:
        """Read what is available, then check the paths that are due."""
        assert self._inotify is not None
        try:
            os.read(self._wake_r, 64)
        except OSError:
            pass
        self._read_writers()
        events = self._inotify.read()
        now = time.monotonic()
        due: dict[bytes, None] = {}
        overflow = False
        for ev in events:
            self.counters["events"] += 1
            if ev.mask & ino.IN_Q_OVERFLOW:
                overflow = True
                continue
            dirs = self._wd_paths.get(ev.wd)
            if not dirs:
                continue
            if ev.mask & ino.IN_IGNORED:
                for d in list(dirs):
                    self._path_wd.pop(d, None)
                del self._wd_paths[ev.wd]
                continue
            for d in list(dirs):
                path = (d if d != b"/" else b"") + b"/" + ev.name if ev.name else d
                self._event(path, ev.mask, now, due)
        if overflow:
            self._overflow()
        for path, deadline in list(self._pending.items()):
            if deadline <= now:
                del self._pending[path]
                due[path] = None
        if due:
            self._check(list(due))

    def _event(self, path: bytes, mask: int, now: float, due: dict[bytes, None]) -> None:
        rootset = self.engine.rootset
        owner = rootset.owner(path)
        below = rootset.roots_under(path) if mask & ino.IN_ISDIR or owner is None else []
        if owner is None and not below:
            return
        if mask & ino.IN_ISDIR:
            if mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
                if owner is not None and owner.recursive:
                    self._watch_tree(path, recursive=True)
                if below:
                    self.plan()
            elif mask & ino.IN_MOVED_FROM:
                self._forget_under(path)
        if mask & (ino.IN_DELETE_SELF | ino.IN_MOVE_SELF):
            due[path] = None
            return
        if mask & _NOW or (mask & ino.IN_ISDIR and mask & ino.IN_CREATE):
            self._pending.pop(path, None)
            due[path] = None
        elif mask & _SETTLE:
            self._pending.setdefault(path, now + self.settle_s)

    def _overflow(self) -> None:
        """The kernel dropped events: re-plan the watches and quick-check every root."""
        self.counters["overflows"] += 1
        self.counters["rescans"] += 1
        log.warning("fim: inotify queue overflow; rescanning the monitored trees")
        self._pending.clear()
        self.plan()
        result = self.engine.check(full=False, update=True)
        self._emit(result.changes)

    def _read_writers(self) -> None:
        fan = self._fan
        if fan is None:
            return
        now = time.monotonic()
        seen: dict[int, ProcessInfo] = {}
        while True:
            events = fan.read()
            if not events:
                return
            for ev in events:
                if ev.path is None or ev.pid <= 0:
                    continue
                info = seen.get(ev.pid)
                if info is None:
                    w = describe_process(ev.pid)
                    info = seen[ev.pid] = ProcessInfo(w.pid, w.exe, w.uid, w.user, w.cmdline)
                head, _, name = ev.path.rpartition(b"/")
                for alias in self._canon.get(head or b"/", {head or b"/"}):
                    self._writers[(alias if alias != b"/" else b"") + b"/" + name] = (info, now)

    def _prune_writers(self, now: float) -> None:
        stale = [p for p, (_, t) in self._writers.items() if now - t > WRITER_TTL_S]
        for p in stale:
            del self._writers[p]

    def _check(self, paths: list[bytes]) -> None:
        # A writer is consumed by the check it explains (a later chmod is not that process's doing).
        processes = {p: self._writers.pop(p)[0] for p in paths if p in self._writers}
        self._emit(self.engine.check_paths(paths, processes=processes))

    def _emit(self, changes: list[Change]) -> None:
        if not changes:
            return
        self.counters["changes"] += len(changes)
        try:
            self.on_changes(changes)
        except Exception as exc:
            log.exception("fim change callback failed")
            self.counters["errors"] += 1
            self._last_error = f"callback: {type(exc).__name__}: {exc}"[:300]
