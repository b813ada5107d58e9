"""Minimal fanotify binding (ctypes over libc) to learn which process wrote a file.

Notification class only (``FAN_CLASS_NOTIF``): nothing is ever blocked. Each event carries an open
descriptor of the written file (closed here after resolving its path) and the writer's pid. Needs
CAP_SYS_ADMIN; ``Fanotify.open()`` raises ``OSError`` where it is unavailable, and callers fall back to
inotify alone (process unknown). Constants are those of ``linux/fanotify.h``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import pwd
import struct
from typing import NamedTuple

FAN_ACCESS = 0x00000001
FAN_MODIFY = 0x00000002
FAN_CLOSE_WRITE = 0x00000008
FAN_Q_OVERFLOW = 0x00004000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000

FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_NOTIF = 0x00000000

FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_DONT_FOLLOW = 0x00000004
FAN_MARK_ONLYDIR = 0x00000008

FANOTIFY_METADATA_VERSION = 3
FAN_NOFD = -1
AT_FDCWD = -100

# struct fanotify_event_metadata: u32 event_len, u8 vers, u8 reserved, u16 metadata_len,
# u64 mask (8-aligned), s32 fd, s32 pid
_META = struct.Struct("=IBBHQii")


class FanEvent(NamedTuple):
    mask: int
    pid: int
    path: bytes | None


class Writer(NamedTuple):
    pid: int
    exe: str
    uid: int | None
    user: str
    cmdline: str


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        lib.fanotify_init.restype = ctypes.c_int
        lib.fanotify_mark.argtypes = [
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint64,
            ctypes.c_int,
            ctypes.c_char_p,
        ]
        lib.fanotify_mark.restype = ctypes.c_int
        _libc = lib
    return _libc


class Fanotify:
    """A notification-only fanotify group with per-directory marks."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls) -> Fanotify:
        try:
            lib = _lib()
        except (OSError, AttributeError) as exc:
            raise OSError(0, f"fanotify not in libc: {exc}") from exc
        fd = lib.fanotify_init(
            FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK, os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC
        )
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_init: {os.strerror(err)}")
        return cls(fd)

    def mark_dir(self, path: bytes, mask: int = FAN_MODIFY | FAN_CLOSE_WRITE) -> None:
        """Events for the files directly inside directory ``path``."""
        rc = _lib().fanotify_mark(
            self.fd,
            FAN_MARK_ADD | FAN_MARK_ONLYDIR | FAN_MARK_DONT_FOLLOW,
            mask | FAN_EVENT_ON_CHILD,
            AT_FDCWD,
            path,
        )
        if rc < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"fanotify_mark: {os.strerror(err)}", path)

    def unmark_dir(self, path: bytes, mask: int = FAN_MODIFY | FAN_CLOSE_WRITE) -> None:
        _lib().fanotify_mark(
            self.fd,
            FAN_MARK_REMOVE | FAN_MARK_ONLYDIR | FAN_MARK_DONT_FOLLOW,
            mask | FAN_EVENT_ON_CHILD,
            AT_FDCWD,
            path,
        )

    def read(self, size: int = 64 * 1024) -> list[FanEvent]:
        """Events available now; their descriptors are resolved to paths and closed."""
        try:
            data = os.read(self.fd, size)
        except BlockingIOError:
            return []
        events: list[FanEvent] = []
        offset = 0
        while offset + _META.size <= len(data):
            event_len, vers, _, _meta_len, mask, fd, pid = _META.unpack_from(data, offset)
            if event_len < _META.size or vers != FANOTIFY_METADATA_VERSION:
                break
            offset += event_len
            path = None
            if fd >= 0:
                try:
                    path = os.readlink(b"/proc/self/fd/%d" % fd)
                except OSError:
                    path = None
                finally:
                    os.close(fd)
            events.append(FanEvent(mask, pid, path))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def describe_process(pid: int, proc: str = "/proc") -> Writer:
    """What /proc still knows about ``pid`` (fields are empty when it has already exited)."""
    exe = ""
    uid: int | None = None
    user = ""
    cmdline = ""
    try:
        exe = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        pass
    try:
        with open(f"{proc}/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    uid = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        pass
    if uid is not None:
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = ""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as f:
            cmdline = f.read(4096).replace(b"\0", b" ").strip().decode("utf-8", "backslashreplace")
    except OSError:
        pass
    return Writer(pid, exe, uid, user, cmdline[:1024])
