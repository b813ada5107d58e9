"""Stat and hash monitored paths: the I/O half of file integrity monitoring (walking is in ``walk``).

Speed comes from doing little per file. The walker lists directories through an open descriptor
(``os.scandir(fd)``) and never stats regular files in a baseline: the d_type from ``getdents`` says what
they are, and the worker that opens the file takes ``fstat`` of the very descriptor it reads, so the
attributes and the hash describe the same file. Small files are read with one ``read(size + 1)`` and
hashed with one call; large ones through a reused buffer (``hashlib`` releases the GIL for both, so
worker threads hash in parallel). A quick check compares ``lstat`` with the baseline and opens a file
only when its inode, size, mtime or ctime moved: content, xattrs, inode flags, mode and owner all bump
ctime, which userspace cannot set back (short of changing the system clock: ``full=True`` rehashes).

Rows are plain tuples in the ``Entry`` field order (also the column order of the baseline table), so a
baseline row read from SQLite compares equal to a fresh scan of an unchanged file.

Bad input never stops a scan: a path that vanishes is skipped, an unreadable file is recorded with its
attributes and an ``error``, symlinks are recorded (with their target) and never followed, FIFOs,
sockets and devices are recorded from ``lstat`` and never opened.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from concurrent.futures import Future, ThreadPoolExecutor

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.model import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    FS_IOC_GETFLAGS,
    O_DIR,
    P_ERR,
    P_PATH,
    P_SHA,
    P_SIZE,
    RACY_NS,
    TRACKED_FLAGS,
    Entry,
    Row,
    ScanCancelled,
    ScanResult,
    ScanStats,
    pack_xattrs,
    racy_paths,
    stat_key,
    unpack_stat_key,
    unpack_xattrs,
)
from hostward.agent.fim.walk import Walk, forked, threaded

# Re-exported: the row layout lives in ``model``; callers of the scanner may import it from here too.
__all__ = [
    "FS_APPEND_FL",
    "FS_IMMUTABLE_FL",
    "P_ERR",
    "P_PATH",
    "P_SHA",
    "P_SIZE",
    "RACY_NS",
    "Entry",
    "Row",
    "ScanCancelled",
    "ScanResult",
    "ScanStats",
    "Scanner",
    "Throttle",
    "pack_xattrs",
    "racy_paths",
    "stat_key",
    "unpack_stat_key",
    "unpack_xattrs",
]

SMALL_FILE = 256 * 1024  # read in one call up to this size
CHUNK = 1024 * 1024
PER_FILE_COST = 4096  # bytes charged to the throttle per opened file (metadata I/O)

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


class Scanner:
    """Builds the current state of a set of roots (a dict path -> row).

    ``workers`` threads open and hash files; ``rate`` (bytes/s) throttles the reads; ``noatime`` asks
    the kernel not to update access times (allowed for root or the file owner).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        rate: int | None = None,
        noatime: bool | None = None,
        racy_ns: int = RACY_NS,
        processes: bool = False,
    ) -> None:
        self.workers = max(1, workers)
        # Forked worker processes instead of threads: walking and hashing are mostly GIL-bound Python,
        # so two processes finish a big tree in about half the time. Only for a one-shot program with
        # no threads of its own (the CLI): never in the agent, and not with a throttle (per process).
        self.processes = processes and rate is None and self.workers > 1
        self.racy_ns = racy_ns
        self.throttle = Throttle(rate) if rate else None
        if noatime is None:
            noatime = os.geteuid() == 0
        self._o_file = _O_FILE | (getattr(os, "O_NOATIME", 0) if noatime else 0)
        self._no_flags_dev: set[int] = set()
        self._no_xattr_dev: set[int] = set()

    # ---- single paths ---------------------------------------------------------------------------

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

    def _scan_file(self, path: bytes, buf: bytearray | None) -> Row | None:
        try:
            fd = os.open(path, self._o_file)
        except OSError as exc:
            if exc.errno == errno.EPERM and self._o_file & getattr(os, "O_NOATIME", 0):
                self._o_file &= ~os.O_NOATIME  # not the owner and not root: ask for atime updates back
                return self._scan_file(path, buf)
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

    # ---- whole roots ----------------------------------------------------------------------------

    def scan(
        self,
        roots: Iterable[WatchRoot],
        *,
        all_roots: RootSet | None = None,
        keys: Mapping[bytes, bytes] | None = None,
        racy: Set[bytes] = frozenset(),
        cancel: threading.Event | None = None,
        sink: Callable[[list[Row]], None] | None = None,
    ) -> ScanResult:
        """The current state of ``roots``.

        Without ``keys`` (a baseline, or a full check) every path gets a fresh row. With ``keys`` (a quick
        check: path -> ``stat_key`` of the recorded row) a path whose key is unchanged is only listed in
        ``unchanged`` and never opened, unless it is in ``racy``. ``all_roots`` lets the walk skip nested
        roots, which are scanned under their own settings. ``sink`` receives the fresh rows in batches
        while the workers still hash (a new baseline is written meanwhile).
        """
        started = time.monotonic()
        started_ns = time.time_ns()
        roots = list(roots)
        rootset = all_roots if all_roots is not None else RootSet(roots)
        walk = Walk(self, rootset, keys, racy, cancel)
        stats = walk.stats
        out: dict[bytes, Row] = {}
        batches = forked(self, walk, roots) if self.processes else threaded(self, walk, roots)
        for rows in batches:
            if sink is not None:
                sink(rows)
            for row in rows:
                out[row[P_PATH]] = row
                if row[P_SHA] is not None:
                    stats.files_hashed += 1
                    stats.bytes_hashed += row[P_SIZE]
        missing: set[bytes] = set()
        if keys is not None:
            if walk.seen_bits is None:
                seen = walk.unchanged
                stats.reused = len(seen)
                missing = {p for p in keys if p not in seen and p not in out}
            else:
                missing = walk.missing_from_bits(out)
        else:
            stats.reused = len(walk.unchanged)
        stats.entries = len(out) + stats.reused
        stats.errors = sum(1 for r in out.values() if r[P_ERR] is not None)
        stats.seconds = time.monotonic() - started
        racy_now = racy_paths(out.values(), started_ns, self.racy_ns)
        return ScanResult(out, walk.unchanged, stats, racy_now, missing)

    @contextlib.contextmanager
    def pool(self) -> Iterator[Callable[[list[bytes]], Callable[[], list[Row]]]]:
        """A ``submit(batch) -> get_rows`` function backed by the worker threads."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="fim-hash") as threads:
            futures: list[Future[list[Row]]] = []

            def submit(batch: list[bytes]) -> Callable[[], list[Row]]:
                fut = threads.submit(self.hash_batch, batch)
                futures.append(fut)
                return fut.result

            try:
                yield submit
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise

    def hash_batch(self, paths: list[bytes]) -> list[Row]:
        buf = bytearray(CHUNK)
        scan_file = self._scan_file
        rows = []
        for path in paths:
            row = scan_file(path, buf)
            if row is not None:
                rows.append(row)
        return rows
