"""Walk, stat and hash monitored paths: the I/O half of file integrity monitoring.

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
import queue
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from hostward.agent.fim.config import RootSet, WatchRoot

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long)
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
TRACKED_FLAGS = FS_IMMUTABLE_FL | FS_APPEND_FL

SMALL_FILE = 256 * 1024  # read in one call up to this size
CHUNK = 1024 * 1024
BATCH = 256  # paths per worker task
PER_FILE_COST = 4096  # bytes charged to the throttle per opened file (metadata I/O)
RACY_NS = 2_000_000_000  # entries changed this close to their scan are rehashed on the next quick check

_O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_ioctl = fcntl.ioctl
_listxattr = os.listxattr
_FLAGS_ARG = b"\0" * 8
_BYTEORDER = sys.byteorder
_FSENC = sys.getfilesystemencoding()
_FSERR = sys.getfilesystemencodeerrors()


class Entry(NamedTuple):
    """One recorded path. ``sha256`` is raw bytes (regular files only), ``flags`` the tracked inode
    flags (None where the filesystem has none), ``xattrs`` packed by ``pack_xattrs``, ``target`` the
    symlink target, ``error`` why content could not be read (errno name)."""

    path: bytes
    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    mtime_ns: int
    ctime_ns: int
    sha256: bytes | None
    flags: int | None
    xattrs: bytes | None
    target: bytes | None
    error: str | None


Row = tuple  # an Entry-shaped plain tuple (building NamedTuples per file costs measurable time)
# Row field positions
P_PATH, P_MODE, P_UID, P_GID, P_SIZE, P_INO, P_MTIME, P_CTIME, P_SHA, P_FLAGS, P_XATTRS, P_TARGET, P_ERR = (
    range(13)
)


def pack_xattrs(pairs: Iterable[tuple[str, bytes]]) -> bytes | None:
    """Canonical bytes for extended attributes: sorted, length-prefixed name and value."""
    out = bytearray()
    for name, value in sorted(pairs):
        raw = name.encode(_FSENC, _FSERR)
        out += len(raw).to_bytes(2, "big") + raw + len(value).to_bytes(4, "big") + value
    return bytes(out) or None


def unpack_xattrs(blob: bytes | None) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    if not blob:
        return result
    i = 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 2], "big")
        name = blob[i + 2 : i + 2 + n].decode(_FSENC, _FSERR)
        i += 2 + n
        m = int.from_bytes(blob[i : i + 4], "big")
        result[name] = blob[i + 4 : i + 4 + m]
        i += 4 + m
    return result


_KEY = struct.Struct("<QqqqIII")


def stat_key(row: Row) -> bytes:
    """What a quick check compares: inode, size, mtime, ctime, mode, uid, gid (packed)."""
    return _KEY.pack(row[P_INO], row[P_SIZE], row[P_MTIME], row[P_CTIME], row[P_MODE], row[P_UID], row[P_GID])


def unpack_stat_key(key: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(ino, size, mtime_ns, ctime_ns, mode, uid, gid) from ``stat_key``."""
    return _KEY.unpack(key)


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


class ScanCancelled(Exception):
    """The caller's cancel event was set during a scan."""


@dataclass
class ScanStats:
    entries: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    reused: int = 0
    errors: int = 0
    seconds: float = 0.0


def racy_paths(rows: Iterable[Row], recorded_ns: int, window_ns: int = RACY_NS) -> set[bytes]:
    """Paths whose ctime is within ``RACY_NS`` of when they were recorded.

    Timestamps have a coarse granularity: a file rewritten with the same size right after we read it
    can keep the ctime we recorded. Such entries are rehashed on the next quick check (the idea of
    git's "racily clean" index entries).
    """
    if window_ns <= 0:
        return set()
    threshold = recorded_ns - window_ns
    return {r[P_PATH] for r in rows if r[P_CTIME] >= threshold}


@dataclass
class ScanResult:
    """``rows``: freshly recorded paths; ``unchanged``: paths whose stat key matched (quick check)."""

    rows: dict[bytes, Row]
    unchanged: set[bytes]
    stats: ScanStats
    racy: set[bytes]


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
    ) -> None:
        self.workers = max(1, workers)
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
            fd = os.open(path, _O_DIR)
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
        walk = _Walk(self, rootset, keys, racy, cancel)
        stats = walk.stats
        with self._pool() as submit:
            walk.submit = submit
            for root in roots:
                walk.root(root)
            walk.flush()
            out = walk.out
            if sink is not None:
                sink(list(out.values()))  # what the walk recorded itself: directories, symlinks, ...
            for result in walk.pending:
                rows = result()
                if sink is not None:
                    sink(rows)
                stats.files_hashed += len(rows)
                for row in rows:
                    out[row[P_PATH]] = row
                    if row[P_SHA] is not None:
                        stats.bytes_hashed += row[P_SIZE]
        stats.reused = len(walk.unchanged)
        stats.entries = len(out) + stats.reused
        stats.errors = sum(1 for r in out.values() if r[P_ERR] is not None)
        stats.seconds = time.monotonic() - started
        return ScanResult(out, walk.unchanged, stats, racy_paths(out.values(), started_ns, self.racy_ns))

    @contextlib.contextmanager
    def _pool(self) -> Iterator[Callable[[list[bytes]], Callable[[], list[Row]]]]:
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


class _Walk:
    """State of one scan: the output dict, the pending batch and the worker futures."""

    def __init__(
        self,
        scanner: Scanner,
        rootset: RootSet,
        keys: Mapping[bytes, bytes] | None,
        racy: Set[bytes],
        cancel: threading.Event | None,
    ) -> None:
        self.s = scanner
        self.rootset = rootset
        self.keys = keys
        self.cancel = cancel
        self.out: dict[bytes, Row] = {}
        self.unchanged: set[bytes] = set()
        self.batch: list[bytes] = []
        self.pending: list[Callable[[], list[Row]]] = []
        self.stats = ScanStats()
        self.submit: Callable[[list[bytes]], Callable[[], list[Row]]] | None = None
        self.racy = racy

    def flush(self) -> None:
        if self.batch:
            assert self.submit is not None
            self.pending.append(self.submit(self.batch))
            self.batch = []

    def same(self, path: bytes, st: os.stat_result) -> bool:
        """True when ``st`` matches the recorded key (and the entry is not racy): nothing to re-read."""
        keys = self.keys
        if keys is None:
            return False
        recorded = keys.get(path)
        if (
            recorded is not None
            and recorded
            == _KEY.pack(
                st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid, st.st_gid
            )
            and path not in self.racy
        ):
            self.unchanged.add(path)
            return True
        return False

    def root(self, root: WatchRoot) -> None:
        path = root.path
        try:
            st = os.lstat(path)
        except OSError:
            return  # a missing root records nothing; it is "added" when it appears
        if stat.S_ISDIR(st.st_mode):
            self.tree(root)
        elif stat.S_ISREG(st.st_mode):
            self.file(path, st)
        elif not self.same(path, st):
            self.out[path] = self.s._scan_other(path, st)

    def file(self, path: bytes, st: os.stat_result | None) -> None:
        if st is not None and self.same(path, st):
            return
        self.batch.append(path)
        if len(self.batch) >= BATCH:
            self.flush()

    def tree(self, root: WatchRoot) -> None:
        """Walk one directory root; with several workers, several threads list directories at once
        (each ``lstat`` and ``getdents`` releases the GIL, and on a VM system calls are most of a quick
        check)."""
        cancel = self.cancel
        walkers = self.s.workers if root.recursive else 1
        if walkers <= 1:
            stack = [root.path]
            batch: list[bytes] = []
            while stack:
                if cancel is not None and cancel.is_set():
                    raise ScanCancelled()
                self.directory(root, stack.pop(), stack.append, batch)
            self.flush_batch(batch)
            return
        todo: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        todo.put(root.path)
        lock = threading.Lock()
        pending = [1]  # directories queued or being listed
        errors: list[BaseException] = []

        def walker() -> None:
            batch: list[bytes] = []
            try:
                while True:
                    dpath = todo.get()
                    if dpath is None:
                        return
                    found: list[bytes] = []
                    try:
                        if cancel is not None and cancel.is_set():
                            raise ScanCancelled()
                        self.directory(root, dpath, found.append, batch)
                    finally:
                        with lock:
                            pending[0] += len(found) - 1
                            done = pending[0] == 0
                        for d in found:
                            todo.put(d)
                        if done:
                            for _ in range(walkers):
                                todo.put(None)
            except BaseException as exc:
                errors.append(exc)
                for _ in range(walkers):
                    todo.put(None)
            finally:
                self.flush_batch(batch)

        threads = [threading.Thread(target=walker, name=f"fim-walk-{i}") for i in range(walkers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def flush_batch(self, batch: list[bytes]) -> None:
        if batch:
            assert self.submit is not None
            self.pending.append(self.submit(list(batch)))
            batch.clear()

    def directory(
        self, root: WatchRoot, dpath: bytes, push: Callable[[bytes], None], batch: list[bytes]
    ) -> None:
        """Record ``dpath`` and its entries; subdirectories to walk go to ``push``, files to hash to
        ``batch`` (handed to the workers every ``BATCH`` paths)."""
        s = self.s
        out = self.out
        rootset = self.rootset
        nested = len(rootset) > 1
        ignore = root.ignore
        quick = self.keys is not None
        same = self.same
        keys_get = (self.keys if self.keys is not None else {}).get
        pack = _KEY.pack
        racy = self.racy
        unchanged_add = self.unchanged.add
        try:
            dfd = os.open(dpath, _O_DIR)
        except OSError:
            row = s._scan_dir_entry(dpath)  # unreadable (recorded with error), vanished or replaced
            if row is not None:
                out[dpath] = row
            return
        try:
            st = os.fstat(dfd)
            if not (quick and same(dpath, st)):
                out[dpath] = s._stat_row(dpath, st, s._flags(dfd, st.st_dev), s._xattrs(dfd, st.st_dev), None)
            if not (root.recursive or dpath == root.path):
                return
            prefix = dpath + b"/" if dpath != b"/" else b"/"
            with os.scandir(dfd) as it:
                for e in it:
                    path = prefix + e.name.encode(_FSENC, _FSERR)
                    if ignore and root.ignored(path):
                        continue
                    if nested and path in rootset:
                        continue  # scanned as its own root
                    if e.is_dir(follow_symlinks=False):
                        if root.recursive:
                            push(path)
                        else:
                            row = s._scan_dir_entry(path)
                            if row is not None:
                                out[path] = row
                    elif e.is_file(follow_symlinks=False):
                        if quick:
                            # Inlined ``same()``: this is the per-file cost of a quick check.
                            try:
                                fst = e.stat(follow_symlinks=False)
                            except OSError:
                                continue  # vanished
                            if keys_get(path) == pack(
                                fst.st_ino,
                                fst.st_size,
                                fst.st_mtime_ns,
                                fst.st_ctime_ns,
                                fst.st_mode,
                                fst.st_uid,
                                fst.st_gid,
                            ) and (not racy or path not in racy):
                                unchanged_add(path)
                                continue
                        batch.append(path)
                        if len(batch) >= BATCH:
                            self.flush_batch(batch)
                    else:
                        try:
                            est = e.stat(follow_symlinks=False)
                        except OSError:
                            continue
                        if not (quick and same(path, est)):
                            out[path] = s._scan_other(path, est)
        except OSError:
            return  # directory vanished while listing
        finally:
            os.close(dfd)
