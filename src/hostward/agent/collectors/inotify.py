"""Wait for "something changed in these directories" with inotify (ctypes), or by sleeping.

The log tailer only needs a wake-up: it re-checks its files itself, so events are read and discarded.
Without inotify (another OS, no libc symbol, watch limit reached) ``ChangeWaiter`` degrades to a timed
sleep of ``fallback_s`` and says so in ``mode``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
from collections.abc import Iterable
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
_DIR_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class ChangeWaiter:
    """``wait(timeout)`` returns early when a watched directory changes or ``wake()`` is called."""

    def __init__(self, directories: Iterable[Path], *, fallback_s: float = 0.25) -> None:
        self._fallback_s = fallback_s
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._fd = -1
        self.mode = "sleep"
        self.reason = ""
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1")
            self._fd = fd
            self._add_watch = libc.inotify_add_watch
            self.mode = "inotify"
        except (OSError, AttributeError) as exc:
            self.reason = f"inotify unavailable ({exc}); polling every {fallback_s} s"
        self._watched: set[Path] = set()
        for directory in directories:
            self.watch(directory)

    def watch(self, directory: Path) -> None:
        if self._fd < 0 or directory in self._watched:
            return
        wd = self._add_watch(self._fd, os.fsencode(directory), _DIR_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            self.reason = f"inotify watch on {directory} failed ({os.strerror(err)}); polling that directory"
            return
        self._watched.add(directory)

    def wake(self) -> None:
        """Make a pending or the next ``wait`` return now (thread-safe; used by the journald reader)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when woken by a change (or a wake), False on timeout."""
        if timeout <= 0:
            return False
        fds = [self._wake_r] + ([self._fd] if self._fd >= 0 else [])
        limit = timeout if self._fd >= 0 and not self.reason else min(timeout, self._fallback_s)
        ready, _, _ = select.select(fds, [], [], limit)
        for fd in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(fd, 65536):
                    pass
        return bool(ready)

    def close(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1
