"""Minimal inotify binding (ctypes over libc): an instance, watches, and event parsing.

Constants are those of ``<sys/inotify.h>`` / ``linux/inotify.h``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len
MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"
MAX_QUEUED_EVENTS = "/proc/sys/fs/inotify/max_queued_events"


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    cookie: int
    name: bytes


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.inotify_init1.argtypes = [ctypes.c_int]
        lib.inotify_init1.restype = ctypes.c_int
        lib.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        lib.inotify_add_watch.restype = ctypes.c_int
        lib.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.inotify_rm_watch.restype = ctypes.c_int
        _libc = lib
    return _libc


def _raise(what: str, path: bytes | None = None) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}", path)


class Inotify:
    """One inotify instance (non-blocking, close-on-exec)."""

    def __init__(self) -> None:
        fd = _lib().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            _raise("inotify_init1")
        self.fd = fd

    def add_watch(self, path: bytes, mask: int) -> int:
        wd = _lib().inotify_add_watch(self.fd, path, mask)
        if wd < 0:
            _raise("inotify_add_watch", path)
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        if _lib().inotify_rm_watch(self.fd, wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            _raise("inotify_rm_watch")

    def read(self, size: int = 256 * 1024) -> list[InotifyEvent]:
        """Events available now (empty when none)."""
        try:
            data = os.read(self.fd, size)
        except BlockingIOError:
            return []
        return list(parse_events(data))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_events(data: bytes) -> Iterator[InotifyEvent]:
    offset = 0
    size = _EVENT.size
    while offset + size <= len(data):
        wd, mask, cookie, length = _EVENT.unpack_from(data, offset)
        name = data[offset + size : offset + size + length].rstrip(b"\0")
        offset += size + length
        yield InotifyEvent(wd, mask, cookie, name)


def read_limit(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def write_limit(path: str, value: int) -> bool:
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
        return True
    except OSError:
        return False
