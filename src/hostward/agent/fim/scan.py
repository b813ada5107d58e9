"""Scanning whole roots: the current state of the monitored trees, as rows (``Entry`` field order).

A baseline records every path; a quick check compares ``lstat`` with the recorded stat key and opens a
file only when its inode, size, mtime or ctime moved: content, xattrs, inode flags, mode and owner all
bump ctime, which userspace cannot set back (short of changing the system clock: ``full=True``
rehashes). Reading one path is ``reader.PathReader``; walking is ``walk`` (threads of this process)
and ``forked`` (child processes, the one-shot CLI only).

Rows are plain tuples in the ``Entry`` field order (also the column order of the baseline table), so a
baseline row read from SQLite compares equal to a fresh scan of an unchanged file.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from concurrent.futures import Future, ThreadPoolExecutor

from hostward.agent.fim import forked
from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.model import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    P_ERR,
    P_PATH,
    P_SHA,
    P_SIZE,
    RACY_NS,
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
from hostward.agent.fim.reader import PathReader, Throttle
from hostward.agent.fim.walk import Walk, threaded

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


class Scanner(PathReader):
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
        super().__init__(rate=rate, noatime=noatime)
        self.workers = max(1, workers)
        # Forked worker processes instead of threads: walking and hashing are mostly GIL-bound Python,
        # so two processes finish a big tree in about half the time. Only for a one-shot program with
        # no threads of its own (the CLI): never in the agent, and not with a throttle (per process).
        self.processes = processes and rate is None and self.workers > 1
        self.racy_ns = racy_ns

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
        batches = forked.rows(self, walk, roots) if self.processes else threaded(self, walk, roots)
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

    def forks_for(self, roots: Iterable[WatchRoot]) -> bool:
        """Whether ``record_into`` / ``check_against`` can share ``roots`` out to child processes."""
        return self.processes and forked.disjoint(list(roots))

    def record_into(
        self,
        roots: Iterable[WatchRoot],
        sink: forked.PartSink,
        *,
        all_roots: RootSet | None = None,
        cancel: threading.Event | None = None,
    ) -> ScanResult:
        """Record ``roots`` straight into a new baseline (forked children write part files that ``sink``
        merges); the result has the counts and racy paths but no rows. Needs ``forks_for(roots)``."""
        started = time.monotonic()
        started_ns = time.time_ns()
        roots = list(roots)
        rootset = all_roots if all_roots is not None else RootSet(roots)
        stats, racy_now = forked.write_baseline(self, roots, rootset, sink, started_ns, cancel)
        stats.seconds = time.monotonic() - started
        return ScanResult({}, set(), stats, racy_now)

    def check_against(
        self,
        roots: Iterable[WatchRoot],
        source: forked.KeySource,
        *,
        all_roots: RootSet | None = None,
        racy: Set[bytes] = frozenset(),
        cancel: threading.Event | None = None,
    ) -> ScanResult:
        """A quick check against a baseline file (children read the recorded keys of their subtrees):
        the rows that moved and the recorded paths not found. Needs ``forks_for(roots)``."""
        started = time.monotonic()
        started_ns = time.time_ns()
        roots = list(roots)
        rootset = all_roots if all_roots is not None else RootSet(roots)
        rows, missing, stats = forked.quick_check(self, roots, rootset, source, racy, cancel)
        stats.seconds = time.monotonic() - started
        return ScanResult(rows, set(), stats, racy_paths(rows.values(), started_ns, self.racy_ns), missing)

    def hash_now(self, batch: list[bytes]) -> Callable[[], list[Row]]:
        """``Walk.submit`` for a walk without worker threads: hash the batch here, now."""
        rows = self.hash_batch(batch)
        return lambda: rows

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
