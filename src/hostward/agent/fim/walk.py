"""Walking the monitored trees for a scan.

``Walk`` holds one scan's state (what was recorded, what is unchanged, batches handed to the hashing
workers) and lists one directory at a time (``directory``). ``threaded`` walks with several threads and
hashes in the scanner's thread pool; ``forked`` (its own module) shares subtrees out to child processes,
whose walks hash each file as it is listed (``Walk.inline``).

With the C accelerator (``PathReader.native``) a directory is listed, quick-checked against the recorded
stat keys and its files recorded in one call each (``_entries``); without it, ``os.scandir`` and
``_scan_file`` do the same file by file.
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Set
from types import ModuleType
from typing import TYPE_CHECKING

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.model import CHUNK, FS_ENCODING, FS_ERRORS, KEY, O_DIR, Row, ScanCancelled, ScanStats

if TYPE_CHECKING:
    from hostward.agent.fim.scan import Scanner

BATCH = 256  # paths per worker task


def threaded(scanner: Scanner, walk: Walk, roots: list[WatchRoot]) -> Iterator[list[Row]]:
    """Walk in this process (several threads), hash in a thread pool; rows in batches."""
    with scanner.pool() as submit:
        walk.submit = submit
        for root in roots:
            walk.root(root)
        walk.flush()
        yield list(walk.out.values())  # what the walk recorded itself: directories, symlinks, ...
        for result in walk.pending:
            yield result()


class Walk:
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
        self.seen_bits: int | None = None  # forked scans: bitmap over ``order`` of unchanged paths
        self.order: list[bytes] = []
        # Hash each file as it is listed, opened relative to the directory's descriptor (one path
        # component to resolve instead of the whole path): for single-threaded walks in forked children.
        self.inline = False
        self._buf: bytearray | None = None

    def index_keys(self) -> dict[bytes, int] | None:
        """Number the recorded paths (forked scans report unchanged paths as bits of this order)."""
        if self.keys is None:
            return None
        self.order = list(self.keys)
        self.seen_bits = 0
        return {p: i for i, p in enumerate(self.order)}

    def missing_from_bits(self, out: Mapping[bytes, Row]) -> set[bytes]:
        """Recorded paths neither unchanged (in a worker or here) nor freshly recorded; counts reuse."""
        order = self.order
        bits = bytearray((self.seen_bits or 0).to_bytes((len(order) + 7) // 8, "little"))
        position = {p: i for i, p in enumerate(order)} if self.unchanged else {}
        for path in self.unchanged:  # what this process itself found unchanged (tops of the trees)
            i = position[path]
            bits[i >> 3] |= 1 << (i & 7)
        self.stats.reused = int.from_bytes(bits, "little").bit_count()
        missing: set[bytes] = set()
        keys = self.keys or {}
        if self.stats.reused + sum(1 for p in out if p in keys) == len(order):
            return missing  # every recorded path accounted for: the usual case, no per-path loop
        for i, path in enumerate(order):
            if not bits[i >> 3] >> (i & 7) & 1 and path not in out:
                missing.add(path)
        return missing

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
            == KEY.pack(
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
        pack = KEY.pack
        racy = self.racy
        unchanged_add = self.unchanged.add
        inline = self.inline
        if inline:
            if self._buf is None:
                self._buf = bytearray(CHUNK)
            buf = self._buf
            scan_file = s._scan_file
        try:
            dfd = os.open(dpath, O_DIR)
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
            if s.native is not None:
                self._entries(root, dfd, prefix, push, batch, s.native)
                return
            with os.scandir(dfd) as it:
                for e in it:
                    name = e.name.encode(FS_ENCODING, FS_ERRORS)
                    path = prefix + name
                    if ignore and root.ignored(path):
                        continue
                    if nested and path in rootset:
                        continue  # scanned as its own root
                    if e.is_dir(follow_symlinks=False):
                        self._subdirectory(root, path, push)
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
                        if inline:
                            row = scan_file(path, buf, dfd, name)
                            if row is not None:
                                out[path] = row
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

    def _subdirectory(self, root: WatchRoot, path: bytes, push: Callable[[bytes], None]) -> None:
        """A directory found in a listing: walked next when its root is recursive, else recorded as an
        entry."""
        if root.recursive:
            push(path)
        else:
            row = self.s._scan_dir_entry(path)
            if row is not None:
                self.out[path] = row

    def _entries(
        self,
        root: WatchRoot,
        dfd: int,
        prefix: bytes,
        push: Callable[[bytes], None],
        batch: list[bytes],
        fast: ModuleType,
    ) -> None:
        """``directory``'s loop over the entries with the C accelerator: the directory is listed, the
        regular files are compared with their recorded keys and recorded, each in one call."""
        s = self.s
        out = self.out
        files, dirs, others = fast.listdir(dfd)
        rootset = self.rootset
        nested = len(rootset) > 1
        if root.ignore or nested:
            ignored = root.ignored if root.ignore else None

            def kept(names: list[bytes]) -> list[bytes]:
                return [
                    n
                    for n in names
                    if not (ignored is not None and ignored(prefix + n))
                    and not (nested and prefix + n in rootset)
                ]

            files, dirs, others = kept(files), kept(dirs), kept(others)
        for name in dirs:
            self._subdirectory(root, prefix + name, push)
        quick = self.keys is not None
        for name in others:
            path = prefix + name
            try:
                est = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if not (quick and self.same(path, est)):
                out[path] = s._scan_other(path, est)
        if quick and files:
            files = fast.moved(dfd, prefix, files, self.keys, self.racy, self.unchanged)
        if not files:
            return
        if self.inline:
            if self._buf is None:
                self._buf = bytearray(CHUNK)
            for row in s.record_files(dfd, prefix, files, self._buf):
                out[row[0]] = row
            return
        batch += [prefix + name for name in files]
        while len(batch) >= BATCH:
            self.flush_batch(batch[:BATCH])
            del batch[:BATCH]
