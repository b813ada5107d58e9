"""``FimEngine``: baseline, check and per-path re-check of the monitored roots.

The engine ties the scanner (I/O), the baseline store and the package index together and returns
classified ``Change`` records; turning them into alarms is the detector's job
(``hostward.agent.detectors.fim``).

Quiet by design:
- a root's first baseline reports nothing (roots added to the configuration are baselined silently on
  the next check; entries of roots removed from it are dropped silently);
- a change to a package-owned file whose new digest matches the package database is labelled
  ``package_update``; changes seen while the package manager holds its lock are deferred (not written
  to the baseline) and re-checked once it is released, so ``.dpkg-new`` files and half-written
  md5sums never alarm (at most ``defer_limit_s``, so a held lock cannot hide tampering for long);
- changes whose operation the root does not monitor are recorded in the baseline but not returned.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hostward.agent.fim.config import RootSet, WatchRoot
from hostward.agent.fim.diff import Change, PackageInfo, ProcessInfo, diff
from hostward.agent.fim.model import P_PATH, Row, ScanStats, racy_paths, stat_key
from hostward.agent.fim.pkgdb import PackageIndex, file_digest, system_index
from hostward.agent.fim.scan import Scanner
from hostward.agent.fim.store import BaselineStore, BaselineWriter

DEFER_LIMIT_S = 600.0
_PACKAGE_ELIGIBLE = frozenset({"sha256", "inode", "size", "type"})


@dataclass
class CheckResult:
    changes: list[Change]
    stats: ScanStats
    deferred: int = 0
    baselined_roots: list[bytes] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass
class FimHealth:
    status: Literal["running", "degraded"]
    reasons: list[str]
    counters: dict[str, int]


class FimEngine:
    """Baseline and checks over one ``BaselineStore``. Methods are thread-safe (one lock)."""

    def __init__(
        self,
        store: BaselineStore,
        roots: Sequence[WatchRoot] | None = None,
        *,
        scanner: Scanner | None = None,
        packages: PackageIndex | Literal["auto"] | None = "auto",
        defer_limit_s: float = DEFER_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.scanner = scanner or Scanner()
        self.packages = system_index() if packages == "auto" else packages
        self.defer_limit_s = defer_limit_s
        self._clock = clock
        self._lock = threading.RLock()
        self._deferred: dict[bytes, float] = {}
        self._processes: dict[bytes, ProcessInfo] = {}
        self._baselined = store.baselined_roots()
        # Two table scans: a one-shot CLI run (forking scanner) never asks for health, so it skips them.
        self._entries: int | None = None
        self._unreadable: int | None = None
        if not self.scanner.processes:
            self._count_entries()
        self.last_stats: ScanStats | None = None
        self.counters: dict[str, int] = {"checks": 0, "changes": 0, "package_updates": 0, "deferred": 0}
        self.set_roots(store.roots() if roots is None else roots)

    @classmethod
    def init(
        cls,
        db: Path | str,
        roots: Sequence[WatchRoot],
        *,
        scanner: Scanner | None = None,
        packages: PackageIndex | Literal["auto"] | None = "auto",
        cancel: threading.Event | None = None,
    ) -> tuple[FimEngine, ScanStats]:
        """Build a new baseline file for ``roots`` (replacing any previous one); reports nothing."""
        scanner = scanner or Scanner()
        rootset = RootSet(roots)
        with BaselineWriter(db, rootset.roots) as writer:
            if scanner.forks_for(rootset.roots):
                result = scanner.record_into(rootset.roots, writer, all_roots=rootset, cancel=cancel)
            else:
                result = scanner.scan(rootset.roots, all_roots=rootset, cancel=cancel, sink=writer.add)
            store = writer.finish(result.racy)
        engine = cls(store, rootset.roots, scanner=scanner, packages=packages)
        engine.last_stats = result.stats
        engine._entries, engine._unreadable = result.stats.entries, result.stats.errors
        return engine, result.stats

    # ---- configuration --------------------------------------------------------------------------

    def set_roots(self, roots: Sequence[WatchRoot]) -> None:
        """Monitor ``roots`` from now on: new ones are baselined silently by the next ``check``."""
        with self._lock:
            self.rootset = RootSet(roots)
            if self.packages is not None and hasattr(self.packages, "set_interest"):
                self.packages.set_interest([r.path for r in self.rootset])

    @property
    def roots(self) -> list[WatchRoot]:
        return self.rootset.roots

    def close(self) -> None:
        with self._lock:
            self.store.close()

    # ---- whole checks ---------------------------------------------------------------------------

    def baseline(self, *, cancel: threading.Event | None = None) -> ScanStats:
        """Rebuild the baseline of every root from scratch (accepts all current state; reports nothing)."""
        with self._lock:
            rootset = self.rootset
            result = self.scanner.scan(rootset.roots, all_roots=rootset, cancel=cancel)
            old = set(self.store.iter_paths())
            self.store.apply(
                result.rows.values(),
                old - result.rows.keys(),
                racy_drop=self.store.racy(),
                racy_add=result.racy,
                roots=rootset.roots,
                drop_roots=[p for p in self._baselined if p not in rootset],
            )
            self._baselined = {r.path for r in rootset}
            self._deferred.clear()
            self._entries = len(result.rows)
            self._unreadable = result.stats.errors
            self.last_stats = result.stats
            return result.stats

    def check(
        self, *, full: bool = False, update: bool = True, cancel: threading.Event | None = None
    ) -> CheckResult:
        """Compare every root with the baseline; ``full`` rehashes files whose metadata is unchanged.

        With ``update`` the baseline moves to the current state (except deferred paths), so a change is
        reported once; without it (the standalone ``check``) the baseline is left as it was.
        """
        with self._lock:
            rootset = self.rootset
            racy = self.store.racy()
            before = self._activity()
            if full:
                previous = self.store.load()
                result = self.scanner.scan(rootset.roots, all_roots=rootset, cancel=cancel)
                deletes = [p for p in previous if p not in result.rows]
            elif self.scanner.forks_for(rootset.roots):
                # Quick, in forked children that read the recorded keys of their subtrees themselves.
                result = self.scanner.check_against(
                    rootset.roots, self.store, all_roots=rootset, racy=racy, cancel=cancel
                )
                deletes = list(result.missing)
                previous = self.store.get_many([*result.rows, *deletes])
            else:
                # Quick: compare stat keys; full rows are read only for the paths that moved.
                keys = self.store.load_keys()
                result = self.scanner.scan(
                    rootset.roots, all_roots=rootset, keys=keys, racy=racy, cancel=cancel
                )
                rows = result.rows
                deletes = list(result.missing)
                previous = self.store.get_many([p for p in rows if p in keys] + deletes)
            current = result.rows
            fresh = [r for r in rootset if r.path not in self._baselined]
            changes = self._classify(diff(previous, current), fresh, {})
            if update:
                # Only a check that moves the baseline can hold changes back for a later re-check.
                changes, deferred = self._defer(changes, before=before)
                upserts = [row for p, row in current.items() if previous.get(p) != row]
                self._write(
                    previous,
                    upserts,
                    deletes,
                    deferred,
                    racy,
                    result.racy,
                    roots=rootset.roots,
                    drop_roots=[p for p in self._baselined if p not in rootset],
                )
                self._baselined = {r.path for r in rootset}
                if self._unreadable is not None:
                    self._unreadable = self.store.count_errors()
            self.counters["checks"] += 1
            self._count(changes)
            self.last_stats = result.stats
            return CheckResult(changes, result.stats, len(self._deferred), [r.path for r in fresh])

    # ---- realtime -------------------------------------------------------------------------------

    def check_paths(
        self, paths: Iterable[bytes], *, processes: Mapping[bytes, ProcessInfo] | None = None
    ) -> list[Change]:
        """Re-check individual paths after a file system event and move the baseline to what was found.

        A path that is (or was) a directory brings its subtree along; a path above a missing root (say
        ``/root/.ssh`` appearing) brings the roots below it. Files are always rehashed. ``processes``
        names who wrote a path (fanotify), attached to its change.
        """
        return self._check_paths(list(paths), processes or {}, rescan_dirs=True)

    def _check_paths(
        self,
        paths: list[bytes],
        processes: Mapping[bytes, ProcessInfo],
        *,
        rescan_dirs: bool,
        first_seen: Mapping[bytes, float] | None = None,
    ) -> list[Change]:
        with self._lock:
            before = self._activity()
            procs = {p: self._processes.pop(p) for p in paths if p in self._processes}
            procs.update(processes)
            previous: dict[bytes, Row] = {}
            current: dict[bytes, Row] = {}
            racy = self.store.racy()
            scanner = self.scanner
            rootset = self.rootset
            baselined = self._baselined
            for path in dict.fromkeys(paths):
                owner = rootset.owner(path)
                below = [r for r in rootset.roots_under(path) if r.path in baselined and r.path != path]
                if (owner is None or owner.path not in baselined) and not below:
                    continue
                prev_sub = self.store.load_under(path)
                previous.update(prev_sub)
                if owner is not None and owner.path in baselined:
                    row = scanner.scan_path(path)
                    if row is not None:
                        is_dir = stat.S_ISDIR(row[1])
                        if is_dir and rescan_dirs and (owner.recursive or path == owner.path):
                            sub = WatchRoot(path, owner.recursive, owner.important, owner.ignore)
                            current.update(self._subscan(sub, prev_sub, racy))
                        else:
                            current[path] = row
                            if is_dir:
                                # Unlisted: keep what is recorded below it.
                                current.update((p, r) for p, r in prev_sub.items() if p != path)
                for root in below:
                    prev_root = self.store.load_under(root.path)
                    previous.update(prev_root)
                    current.update(self._subscan(root, prev_root, racy))
            if not previous and not current:
                return []
            changes = self._classify(diff(previous, current), [], procs)
            changes, deferred = self._defer(changes, before=before, first_seen=first_seen)
            upserts = [row for p, row in current.items() if previous.get(p) != row]
            deletes = [p for p in previous if p not in current]
            now_racy = racy_paths(current.values(), time.time_ns(), scanner.racy_ns)
            touched = set(previous) | set(current)
            self._write(previous, upserts, deletes, deferred, racy & touched, now_racy)
            self._count(changes)
            return changes

    def _subscan(self, root: WatchRoot, prev: dict[bytes, Row], racy: set[bytes]) -> dict[bytes, Row]:
        """Current rows of one subtree, reusing ``prev`` rows whose stat key is unchanged."""
        keys = {p: stat_key(r) for p, r in prev.items()}
        result = self.scanner.scan([root], all_roots=self.rootset, keys=keys, racy=racy)
        gone = result.missing
        current = {p: r for p, r in prev.items() if p not in gone}
        current.update(result.rows)
        return current

    def poll(self) -> list[Change]:
        """Re-check deferred paths once the package manager is done (or they waited too long)."""
        with self._lock:
            if not self._deferred:
                return []
            oldest = min(self._deferred.values())
            busy = self.packages is not None and self.packages.busy()
            if busy and self._clock() - oldest < self.defer_limit_s:
                return []
            first_seen = dict(self._deferred)
            self._deferred.clear()
            # Deferred again if the package manager is (still, or again) at work, until the limit; past
            # it, classified with what the package database says now.
            return self._check_paths(list(first_seen), {}, rescan_dirs=False, first_seen=first_seen)

    @property
    def deferred(self) -> int:
        return len(self._deferred)

    # ---- internals ------------------------------------------------------------------------------

    def _write(
        self,
        previous: Mapping[bytes, Row],
        upserts: list[Row],
        deletes: list[bytes],
        deferred: set[bytes],
        old_racy: set[bytes],
        new_racy: set[bytes],
        **kw: Any,
    ) -> None:
        if deferred:
            upserts = [r for r in upserts if r[P_PATH] not in deferred]
            deletes = [p for p in deletes if p not in deferred]
        self.store.apply(upserts, deletes, racy_drop=old_racy - new_racy, racy_add=new_racy - old_racy, **kw)
        # ``previous`` holds every recorded path among these rows: the rest are new entries.
        if self._entries is not None:
            self._entries += sum(1 for r in upserts if r[P_PATH] not in previous) - len(deletes)

    def _count(self, changes: list[Change]) -> None:
        self.counters["changes"] += len(changes)
        self.counters["package_updates"] += sum(1 for c in changes if c.label == "package_update")

    def _classify(
        self, changes: list[Change], fresh: list[WatchRoot], processes: Mapping[bytes, ProcessInfo]
    ) -> list[Change]:
        """Attach root, package and process; drop what is silent (fresh roots, unmonitored paths/ops)."""
        out: list[Change] = []
        rootset = self.rootset
        baselined = self._baselined
        fresh_paths = {r.path for r in fresh}
        if changes and self.packages is not None:
            self.packages.refresh()
        for change in changes:
            root = rootset.owner(change.path)
            if root is None or root.path in fresh_paths or root.path not in baselined:
                continue  # not monitored (any more), or part of a first baseline
            if change.operation not in root.operations:
                continue
            values: dict[str, Any] = {"important": root.important}
            process = processes.get(change.path)
            if process is None and change.moved_from is not None:
                process = processes.get(change.moved_from)
            if process is not None:
                values["process"] = process
            package = self._package(change)
            if package is not None:
                values["package"] = package
            out.append(change.with_(**values))
        return out

    def _package(self, change: Change) -> PackageInfo | None:
        index = self.packages
        if index is None:
            return None
        if change.action == "removed":
            name = index.dropped(change.path)
            if name is not None:
                return PackageInfo(index.manager, name, True)
            owner = index.owner(change.path)
            return PackageInfo(owner.manager, owner.package, False) if owner is not None else None
        new = change.new
        if new is None or not stat.S_ISREG(new.mode):
            return None
        owner = index.owner(change.path)
        if owner is None:
            return None
        eligible = change.action in ("added", "moved") or bool(_PACKAGE_ELIGIBLE.intersection(change.attrs))
        matches = False
        if eligible and owner.digest:
            matches = file_digest(change.path, owner.algorithm) == owner.digest
        return PackageInfo(owner.manager, owner.package, matches)

    def _activity(self) -> tuple[bool, object]:
        """Whether the package manager is at work, and a token that moves whenever its database does."""
        packages = self.packages
        if packages is None:
            return False, None
        return packages.busy(), packages.activity()

    def _defer(
        self,
        changes: list[Change],
        *,
        before: tuple[bool, object],
        first_seen: Mapping[bytes, float] | None = None,
    ) -> tuple[list[Change], set[bytes]]:
        """Hold back changes seen while the package manager worked: ``poll`` re-checks them later.

        "While" covers the whole scan: busy before it, busy after it, or its database moved during it
        (a short dpkg run can start and finish while we hash, leaving us with its ``.dpkg-new`` files).
        """
        if not changes or self.packages is None:
            return changes, set()
        busy_before, token_before = before
        if not busy_before and not self.packages.busy() and self.packages.activity() == token_before:
            return changes, set()
        now = self._clock()
        kept: list[Change] = []
        deferred: set[bytes] = set()
        seen = first_seen or {}
        for change in changes:
            first = seen.get(change.path, self._deferred.get(change.path, now))
            if now - first >= self.defer_limit_s:
                kept.append(change)
                self._deferred.pop(change.path, None)
                continue
            self._deferred[change.path] = first
            deferred.add(change.path)
            if change.moved_from is not None:
                deferred.add(change.moved_from)
                self._deferred[change.moved_from] = first
            if change.process is not None:
                self._processes[change.path] = change.process
        self.counters["deferred"] += len(deferred)
        return kept, deferred

    def _count_entries(self) -> None:
        self._entries = self.store.count()
        self._unreadable = self.store.count_errors()

    def health(self) -> FimHealth:
        """Counters and reasons; never waits for a running check (reads only values kept in memory)."""
        if self._entries is None and self._lock.acquire(blocking=False):
            try:
                self._count_entries()
            finally:
                self._lock.release()
        reasons: list[str] = []
        baselined = self._baselined
        missing = sum(1 for r in self.rootset if r.path not in baselined)
        deferred = len(self._deferred)
        if self.packages is None:
            reasons.append("no package database: package updates are reported as changes")
        if deferred:
            reasons.append(f"{deferred} changes deferred while the package manager runs")
        counters = dict(self.counters)
        counters.update(
            entries=self._entries or 0,
            roots=len(self.rootset),
            roots_pending=missing,
            unreadable=self._unreadable or 0,
            deferred_now=deferred,
        )
        return FimHealth("running", reasons, counters)
