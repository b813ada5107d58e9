"""Reading one path for file integrity monitoring: attributes, inode flags, xattrs and the SHA-256.

Speed comes from doing little per file: the worker that opens a file takes ``fstat`` of the very
descriptor it reads, so the attributes and the hash describe the same file; small files are read with
one ``read(size + 1)`` and hashed with one call, large ones through a reused buffer (``hashlib``
releases the GIL for both, so worker threads hash in parallel). Walkers that hold the directory open
pass its descriptor, so only the last path component is resolved.

Bad input never stops a scan: a path that vanishes is skipped (None), an unreadable file is recorded
with its attributes and an ``error``, symlinks are recorded (with their target) and never followed,
FIFOs, sockets and devices are recorded from ``lstat`` and never opened.

``record_files`` records many regular files at once: through the C twin of ``_scan_file``
(``hostward.agent.fim._fimscan``, which works without the GIL) when it is built, else file by file here;
both give the same rows. Whatever the C path leaves (an open that fails, a big file under a throttle)
goes through ``_scan_file``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType

from hostward import native
from hostward.agent.fim.model import (
    CHUNK,
    FS_IOC_GETFLAGS,
    O_DIR,
    TRACKED_FLAGS,
    Row,
    pack_xattrs,
)

SMALL_FILE = 256 * 1024  # read in one call up to this size
PER_FILE_COST = 4096  # bytes charged to the throttle per opened file (metadata I/O)
NATIVE = "hostward.agent.fim._fimscan"
_AT_FDCWD = -100

_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ioctl = fcntl.ioctl
_listxattr = os.listxattr
_FLAGS_ARG = b"\0" * 8
_BYTEORDER = sys.byteorder


class Throttle:
    """Token bucket in bytes per second shared by the scan workers (keeps the agent in its budget)."""

    def __init__(
        self,
        rate: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("throttle rate must be positive")
        self.rate = rate
        self._burst = max(rate // 4, CHUNK)
        self._tokens = float(self._burst)
        self._last = clock()
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> None:
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self._burst), self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= nbytes
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)


class PathReader:
    """Records single paths (rows in ``Entry`` order); the per-path half of ``Scanner``."""

    throttle: Throttle | None

    def __init__(self, *, rate: int | None = None, noatime: bool | None = None) -> None:
        self.throttle = Throttle(rate) if rate else None
        if noatime is None:
            noatime = os.geteuid() == 0
        self._o_file = _O_FILE | (getattr(os, "O_NOATIME", 0) if noatime else 0)
        self._no_flags_dev: set[int] = set()
        self._no_xattr_dev: set[int] = set()
        self.native: ModuleType | None = native.load(NATIVE)

    def scan_path(self, path: bytes) -> Row | None:
        """Record one path whatever it is (None when it does not exist)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None  # missing, or hidden behind a directory we may not search
        if stat.S_ISREG(st.st_mode):
            return self._scan_file(path, None)
        if stat.S_ISDIR(st.st_mode):
            return self._scan_dir_entry(path)
        return self._scan_other(path, st)

    def _flags(self, fd: int, dev: int) -> int | None:
        if dev in self._no_flags_dev:
            return None
        try:
            raw = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0\0\0\0\0\0\0\0")
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self._no_flags_dev.add(dev)
            return None
        return int.from_bytes(raw[:4], sys.byteorder) & TRACKED_FLAGS

    def _xattrs(self, target: int | bytes, dev: int) -> bytes | None:
        if dev in self._no_xattr_dev:
            return None
        try:
            names = (
                os.listxattr(target, follow_symlinks=False)
                if isinstance(target, bytes)
                else os.listxattr(target)
            )
            if not names:
                return None
            if isinstance(target, bytes):
                return pack_xattrs((n, os.getxattr(target, n, follow_symlinks=False)) for n in names)
            return pack_xattrs((n, os.getxattr(target, n)) for n in names)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.ENOSYS):
                self._no_xattr_dev.add(dev)
            return None

    def _scan_file(
        self, path: bytes, buf: bytearray | None, dir_fd: int | None = None, name: bytes = b""
    ) -> Row | None:
        """Open, ``fstat`` and hash one regular file (``name`` relative to ``dir_fd`` when given)."""
        try:
            fd = os.open(path if dir_fd is None else name, self._o_file, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.EPERM and self._o_file & getattr(os, "O_NOATIME", 0):
                self._o_file &= ~os.O_NOATIME  # not the owner and not root: ask for atime updates back
                return self._scan_file(path, buf, dir_fd, name)
            try:
                st = os.lstat(path)
            except OSError:
                return None  # vanished
            if not stat.S_ISREG(st.st_mode):
                return (
                    self._scan_other(path, st) if not stat.S_ISDIR(st.st_mode) else self._scan_dir_entry(path)
                )
            return self._stat_row(path, st, None, None, errno.errorcode.get(exc.errno or 0, "EIO"))
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                # Replaced by a FIFO/device between listing and open: attributes only.
                return self._stat_row(path, st, None, None, None)
            # _flags/_xattrs inlined: this runs once per file and each call level costs measurable time.
            dev = st.st_dev
            flags = None
            if dev not in self._no_flags_dev:
                try:
                    flags = (
                        int.from_bytes(_ioctl(fd, FS_IOC_GETFLAGS, _FLAGS_ARG)[:4], _BYTEORDER)
                        & TRACKED_FLAGS
                    )
                except OSError:
                    flags = self._flags(fd, dev)  # records filesystems without inode flags
            xattrs = None
            if dev not in self._no_xattr_dev:
                try:
                    names = _listxattr(fd)
                except OSError:
                    names = None
                    xattrs = self._xattrs(fd, dev)  # records filesystems without xattrs
                if names:
                    xattrs = self._xattrs(fd, dev)
            size = st.st_size
            err = None
            digest: bytes | None
            try:
                if self.throttle is not None:
                    self.throttle.take(size + PER_FILE_COST)
                if size < SMALL_FILE:
                    data = os.read(fd, size + 1)
                    if len(data) <= size:
                        digest = hashlib.sha256(data).digest()
                    else:  # grew since fstat
                        h = hashlib.sha256(data)
                        self._hash_rest(fd, h, buf)
                        digest = h.digest()
                else:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                    h = hashlib.sha256()
                    self._hash_rest(fd, h, buf)
                    digest = h.digest()
            except OSError as exc:
                digest = None
                err = errno.errorcode.get(exc.errno or 0, "EIO")
            return (
                path,
                st.st_mode,
                st.st_uid,
                st.st_gid,
                size,
                st.st_ino,
                st.st_mtime_ns,
                st.st_ctime_ns,
                digest,
                flags,
                xattrs,
                None,
                err,
            )
        finally:
            os.close(fd)

    def _hash_rest(self, fd: int, h: hashlib._Hash, buf: bytearray | None) -> None:
        if buf is None:
            buf = bytearray(CHUNK)
        view = memoryview(buf)
        throttle = self.throttle
        readv = os.readv
        while True:
            n = readv(fd, [buf])
            if not n:
                return
            h.update(view[:n])
            if throttle is not None and n == CHUNK:
                throttle.take(n)

    def _stat_row(
        self,
        path: bytes,
        st: os.stat_result,
        flags: int | None,
        xattrs: bytes | None,
        err: str | None,
        target: bytes | None = None,
    ) -> Row:
        return (
            path,
            st.st_mode,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_ino,
            st.st_mtime_ns,
            st.st_ctime_ns,
            None,
            flags,
            xattrs,
            target,
            err,
        )

    def _scan_other(self, path: bytes, st: os.stat_result) -> Row:
        target = None
        err = None
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                err = errno.errorcode.get(exc.errno or 0, "EIO")
        return self._stat_row(path, st, None, self._xattrs(path, st.st_dev), err, target)

    def _scan_dir_entry(self, path: bytes) -> Row | None:
        """A directory as an entry (without listing it)."""
        try:
            fd = os.open(path, O_DIR)
        except OSError as exc:
            try:
                st = os.lstat(path)
            except OSError:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return (
                    self._scan_other(path, st)
                    if not stat.S_ISREG(st.st_mode)
                    else self._scan_file(path, None)
                )
            return self._stat_row(
                path, st, None, self._xattrs(path, st.st_dev), errno.errorcode.get(exc.errno or 0, "EIO")
            )
        try:
            st = os.fstat(fd)
            return self._stat_row(path, st, self._flags(fd, st.st_dev), self._xattrs(fd, st.st_dev), None)
        finally:
            os.close(fd)

    def record_files(
        self, dir_fd: int | None, prefix: bytes, names: list[bytes], buf: bytearray | None = None
    ) -> list[Row]:
        """Rows of the regular files ``names`` (paths ``prefix + name``), opened relative to ``dir_fd``
        (whole paths, with an empty prefix, when it is None); vanished ones are left out."""
        if buf is None:
            buf = bytearray(CHUNK)
        fast = self.native
        if fast is None:
            return self._record_each(dir_fd, prefix, names, buf)
        fd = _AT_FDCWD if dir_fd is None else dir_fd
        throttle = self.throttle
        if throttle is None:
            rows, left, self._o_file, _ = fast.record(
                fd, prefix, names, self._o_file, self._no_flags_dev, self._no_xattr_dev, buf
            )
        else:
            # Groups of at most a quarter second's worth of small files, charged as they are read; big
            # files are left to ``_scan_file``, which charges every chunk before reading it.
            rows, left = [], []
            step = max(1, min(64, throttle.rate // (4 * SMALL_FILE)))
            for i in range(0, len(names), step):
                group = names[i : i + step]
                done, rest, self._o_file, nbytes = fast.record(
                    fd, prefix, group, self._o_file, self._no_flags_dev, self._no_xattr_dev, buf, SMALL_FILE
                )
                throttle.take(nbytes + PER_FILE_COST * len(done))
                rows += done
                left += rest
        if left:
            rows += self._record_each(dir_fd, prefix, left, buf)
        return rows

    def _record_each(
        self, dir_fd: int | None, prefix: bytes, names: list[bytes], buf: bytearray
    ) -> list[Row]:
        scan_file = self._scan_file
        rows = []
        for name in names:
            row = scan_file(prefix + name, buf, dir_fd, name)
            if row is not None:
                rows.append(row)
        return rows

    def hash_batch(self, paths: list[bytes]) -> list[Row]:
        """Rows of the regular files at ``paths`` (whole paths)."""
        return self.record_files(None, b"", paths)
