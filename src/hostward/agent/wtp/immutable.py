"""The immutable file attribute (``chattr +i``): FS_IOC_GETFLAGS/SETFLAGS, falling back to ``chattr``.

An immutable file cannot be written, renamed, linked or deleted, even by root, until the flag is
cleared (which needs CAP_LINUX_IMMUTABLE). Filesystems without the flag answer ENOTTY/EOPNOTSUPP;
``ImmutableUnsupported`` says so and the guard falls back to watch-and-restore alone.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import shutil
import subprocess
from typing import Protocol

from hostward.agent.errors import AgentError

# linux/fs.h; the ioctls are declared with ``long`` but every filesystem reads and writes an int
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
_UNSUPPORTED = {errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class ImmutableUnsupported(AgentError):
    """The filesystem holding the path has no immutable attribute."""

    code = "immutable_unsupported"


class Immutability(Protocol):
    """What the guard needs: read and set the immutable attribute of one path."""

    def is_immutable(self, path: str) -> bool: ...

    def set_immutable(self, path: str, on: bool) -> None: ...


def _open(path: str) -> int:
    # O_NONBLOCK: a FIFO must not block the open; O_NOFOLLOW: never change a symlink's target
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)


def get_flags(path: str) -> int:
    """The inode flags of ``path`` (raises ``ImmutableUnsupported`` where the filesystem has none)."""
    fd = _open(path)
    try:
        buf = array.array("i", [0])
        try:
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf, True)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                raise ImmutableUnsupported(f"{path}: immutable attribute not supported") from exc
            raise
        return int(buf[0])
    finally:
        os.close(fd)


class KernelImmutability:
    """The real attribute: ioctl first, the ``chattr`` argv when the ioctl itself is refused."""

    def __init__(self, chattr: str | None = None) -> None:
        self.chattr = chattr or shutil.which("chattr") or "/usr/bin/chattr"

    def is_immutable(self, path: str) -> bool:
        return bool(get_flags(path) & FS_IMMUTABLE_FL)

    def set_immutable(self, path: str, on: bool) -> None:
        flags = get_flags(path)
        new = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        if new == flags:
            return
        fd = _open(path)
        try:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, array.array("i", [new]), True)
            return
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                raise ImmutableUnsupported(f"{path}: immutable attribute not supported") from exc
            if exc.errno != errno.EPERM:
                raise
        finally:
            os.close(fd)
        self._chattr(path, on)

    def _chattr(self, path: str, on: bool) -> None:
        argv = [self.chattr, "+i" if on else "-i", "--", path]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OSError(errno.EPERM, f"{path}: chattr failed: {exc}") from exc
        if done.returncode != 0:
            msg = done.stderr.decode("utf-8", "replace").strip()
            raise OSError(errno.EPERM, f"{path}: chattr failed: {msg}")


def probe(path: str, immutability: Immutability) -> bool:
    """Whether the filesystem holding ``path`` supports the attribute (without changing anything)."""
    try:
        immutability.is_immutable(path)
    except ImmutableUnsupported:
        return False
    return True
