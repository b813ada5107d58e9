"""Forked scans (the one-shot CLI only): subtrees of the monitored trees walked and hashed in child processes.

Walking and hashing are mostly GIL-bound Python, so two processes finish a big tree in about half the
time of two threads. Only a program with no threads of its own may fork (``hostward fim init|check``);
the agent never scans this way. The parent lists the top of each tree until there are enough subtrees
("units") to share out; a pool of forked children walks them, opening each file relative to its
directory's descriptor and hashing it as it is listed. What comes back to the parent is kept small,
because the parent is a third process on the same CPUs:

- ``write_baseline``: each child writes the rows of a unit into a small SQLite part file beside the new
  baseline and returns counts only; the parent merges the parts in SQL, so no row of the tree ever
  becomes a Python object in the parent.
- ``quick_check`` (root sets where no root lies inside another): each child reads the recorded stat keys
  of its unit from the baseline file (one range query) and returns the rows that moved and the recorded
  paths it did not find; the parent looks up only the few entries it lists itself, by point queries.
- ``rows``: everything else (a full check, nested roots): children return every fresh row, and the
  recorded paths they found unchanged as a bitmap over the recorded keys.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Set
from typing import TYPE_CHECKING, Any, Protocol, cast

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.model import P_CTIME, P_ERR, P_PATH, P_SHA, P_SIZE, Row, ScanCancelled, ScanStats
from hostward.agent.fim.walk import Walk

if TYPE_CHECKING:
    from hostward.agent.fim.scan import Scanner

UNITS_PER_WORKER = 8


class PartSink(Protocol):
    """Where ``write_baseline`` puts rows: the parent's own rows, child part files, and their merge."""

    part_dir: str

    def add(self, rows: list[Row]) -> None: ...

    def merge_part(self, part: str) -> None: ...


class KeySource(Protocol):
    """The recorded baseline, for ``quick_check``: point lookups here, range reads in the children."""

    def key(self, path: bytes) -> bytes | None: ...

    def paths_outside(self, subtrees: list[bytes]) -> set[bytes]: ...

    def reader(self) -> Any:
        """A function for the children (called after the fork; opens its own connection):
        ``keys_under(directory) -> {path: stat key}`` of the directory and everything below it."""
        ...


def disjoint(roots: list[WatchRoot]) -> bool:
    """True when no root lies at or below another one (each recorded path has exactly one walker)."""
    paths = sorted(r.path.rstrip(b"/") + b"/" for r in roots)
    # Sorted, a path below another follows it directly or after others below it too: pairs suffice.
    return all(not b.startswith(a) for a, b in itertools.pairwise(paths))


def top_units(scanner: Scanner, walk: Walk, roots: list[WatchRoot]) -> list[tuple[int, bytes]]:
    """Record the top of each tree here (files and non-recursive roots included) until there are enough
    subtrees to share out; returns them as (root index, directory) units."""
    units: list[tuple[int, bytes]] = []
    for index, root in enumerate(roots):
        try:
            st = os.lstat(root.path)
        except OSError:
            continue  # a missing root records nothing; it is "added" when it appears
        if not (stat.S_ISDIR(st.st_mode) and root.recursive):
            walk.root(root)
            continue
        frontier = [root.path]
        for _ in range(4):
            if len(frontier) >= UNITS_PER_WORKER * scanner.workers:
                break
            deeper: list[bytes] = []
            for d in frontier:
                walk.directory(root, d, deeper.append, walk.batch)
            frontier = deeper
        units += [(index, d) for d in frontier]
    walk.flush()
    return units


def _pool(scanner: Scanner, units: list[tuple[int, bytes]]) -> Any:
    return multiprocessing.get_context("fork").Pool(min(scanner.workers, len(units)), initializer=_child_init)


def _child_init() -> None:
    # A child lives for one scan and makes no reference cycles worth collecting; its rows (a tuple per
    # file) would otherwise trigger a collection every few hundred files.
    gc.disable()


def _walk_unit(walk: Walk, roots: list[WatchRoot], unit: tuple[int, bytes]) -> None:
    root = roots[unit[0]]
    stack = [unit[1]]
    batch: list[bytes] = []
    while stack:
        walk.directory(root, stack.pop(), stack.append, batch)
    walk.flush_batch(batch)


def _tally(stats: ScanStats, rows: Iterable[Row]) -> None:
    for row in rows:
        if row[P_SHA] is not None:
            stats.files_hashed += 1
            stats.bytes_hashed += row[P_SIZE]
        if row[P_ERR] is not None:
            stats.errors += 1


def _own_rows(walk: Walk) -> list[Row]:
    rows = list(walk.out.values())
    for result in walk.pending:
        rows += result()
    walk.pending.clear()
    return rows


# What forked children inherit, set just before the fork (one scan at a time: the CLI is one-shot).
_state: dict[str, Any] = {}


def _child_walk(keys: Mapping[bytes, bytes] | None) -> Walk:
    scanner: Scanner = _state["scanner"]
    walk = Walk(scanner, _state["rootset"], keys, _state["racy"], None)
    walk.inline = True
    return walk


# ---- a new baseline ------------------------------------------------------------------------------


def write_baseline(
    scanner: Scanner,
    roots: list[WatchRoot],
    rootset: RootSet,
    sink: PartSink,
    started_ns: int,
    cancel: threading.Event | None,
) -> tuple[ScanStats, set[bytes]]:
    """Record ``roots`` into ``sink``; returns the counts and the racy paths (no rows)."""
    walk = Walk(scanner, rootset, None, frozenset(), cancel)
    walk.submit = scanner.hash_now
    units = top_units(scanner, walk, roots)
    own = _own_rows(walk)
    sink.add(own)
    stats = walk.stats
    stats.entries = len(own)
    _tally(stats, own)
    threshold = started_ns - scanner.racy_ns if scanner.racy_ns > 0 else None
    racy = {r[P_PATH] for r in own if r[P_CTIME] >= threshold} if threshold is not None else set()
    if not units:
        return stats, racy
    _state.update(scanner=scanner, rootset=rootset, racy=frozenset(), roots=roots, sink_dir=sink.part_dir)
    _state.update(threshold=threshold, owner=os.getpid())
    try:
        with _pool(scanner, units) as procs:
            for part, counts, racy_part in procs.imap_unordered(_unit_to_part, units):
                if cancel is not None and cancel.is_set():
                    os.unlink(part)
                    raise ScanCancelled()
                try:
                    sink.merge_part(part)
                finally:
                    os.unlink(part)
                entries, hashed, nbytes, errors = counts
                stats.entries += entries
                stats.files_hashed += hashed
                stats.bytes_hashed += nbytes
                stats.errors += errors
                racy.update(racy_part)
    except BaseException:
        _remove_parts(sink.part_dir)  # of units the children finished before the failure
        raise
    finally:
        _state.clear()
    return stats, racy


def _remove_parts(directory: str) -> None:
    from hostward.agent.fim.store import part_prefix

    prefix = part_prefix(os.getpid())
    try:
        names = [n for n in os.listdir(directory) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _unit_to_part(unit: tuple[int, bytes]) -> tuple[str, tuple[int, int, int, int], list[bytes]]:
    """In a child: walk and hash one unit into a part file; its name, counts and racy paths."""
    from hostward.agent.fim.store import write_part

    walk = _child_walk(None)
    _walk_unit(walk, _state["roots"], unit)
    rows = _own_rows(walk)
    part = write_part(_state["sink_dir"], rows, _state["owner"])
    stats = ScanStats()
    _tally(stats, rows)
    threshold = _state["threshold"]
    racy = [r[P_PATH] for r in rows if r[P_CTIME] >= threshold] if threshold is not None else []
    return part, (len(rows), stats.files_hashed, stats.bytes_hashed, stats.errors), racy


# ---- a quick check against the baseline file -----------------------------------------------------


def quick_check(
    scanner: Scanner,
    roots: list[WatchRoot],
    rootset: RootSet,
    source: KeySource,
    racy: Set[bytes],
    cancel: threading.Event | None,
) -> tuple[dict[bytes, Row], set[bytes], ScanStats]:
    """Rows that moved, recorded paths not found, counts (``reused``: paths whose stat key matched)."""
    # The walk only calls ``keys.get`` on this path (no bitmap, no missing-path pass over the keys).
    walk = Walk(scanner, rootset, cast("Mapping[bytes, bytes]", _PointKeys(source)), racy, cancel)
    walk.submit = scanner.hash_now
    units = top_units(scanner, walk, roots)
    rows = {r[P_PATH]: r for r in _own_rows(walk)}
    seen = walk.unchanged
    stats = walk.stats
    stats.reused = len(seen)
    missing = source.paths_outside([u for _, u in units]) - seen - rows.keys()
    if units:
        _state.update(scanner=scanner, rootset=rootset, racy=racy, roots=roots, reader=source.reader())
        try:
            with _pool(scanner, units) as procs:
                for fresh, gone, reused in procs.imap_unordered(_unit_check, units):
                    if cancel is not None and cancel.is_set():
                        raise ScanCancelled()
                    rows.update((r[P_PATH], r) for r in fresh)
                    missing.update(gone)
                    stats.reused += reused
        finally:
            _state.clear()
    _tally(stats, rows.values())
    stats.entries = len(rows) + stats.reused
    return rows, missing, stats


class _PointKeys:
    """``Walk.keys`` for the parent's few entries: one indexed lookup each, nothing loaded up front."""

    def __init__(self, source: KeySource) -> None:
        self.get = source.key


def _unit_check(unit: tuple[int, bytes]) -> tuple[list[Row], list[bytes], int]:
    """In a child: compare one unit with its recorded keys; moved rows, missing paths, unchanged count."""
    keys = _state["reader"](unit[1])
    walk = _child_walk(keys)
    _walk_unit(walk, _state["roots"], unit)
    fresh = _own_rows(walk)
    seen = walk.unchanged
    gone = keys.keys() - seen
    if gone:
        gone.difference_update(r[P_PATH] for r in fresh)
    return fresh, list(gone), len(seen)


# ---- every row back to the parent ----------------------------------------------------------------


def rows(scanner: Scanner, walk: Walk, roots: list[WatchRoot]) -> Iterator[list[Row]]:
    """Walk + hash in forked children; fresh rows in batches (unchanged recorded paths as bits, below)."""
    walk.submit = scanner.hash_now
    units = top_units(scanner, walk, roots)
    yield _own_rows(walk)
    if not units:
        return
    positions = walk.index_keys()
    _state.update(
        scanner=scanner, rootset=walk.rootset, keys=walk.keys, racy=walk.racy, roots=roots, index=positions
    )
    try:
        with _pool(scanner, units) as procs:
            for found, bitmap in procs.imap_unordered(_unit_rows, units):
                if walk.cancel is not None and walk.cancel.is_set():
                    raise ScanCancelled()
                if bitmap:
                    walk.seen_bits = (walk.seen_bits or 0) | int.from_bytes(bitmap, "little")
                yield found
    finally:
        _state.clear()


def _unit_rows(unit: tuple[int, bytes]) -> tuple[list[Row], bytes]:
    """In a child: walk and hash one subtree; fresh rows and a bitmap of the unchanged paths."""
    walk = _child_walk(_state["keys"])
    _walk_unit(walk, _state["roots"], unit)
    found = _own_rows(walk)
    index: dict[bytes, int] | None = _state["index"]
    bitmap = b""
    if index is not None and walk.unchanged:
        bits = bytearray((len(index) + 7) // 8)
        for path in walk.unchanged:
            i = index[path]
            bits[i >> 3] |= 1 << (i & 7)
        bitmap = bytes(bits)
    return found, bitmap
