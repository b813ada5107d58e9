"""Local content-addressed snapshots of the protected directories, retention by count, restore.

Layout under ``root``: ``blobs/`` (shared, one copy per distinct content, see ``wtp.backup``) and
``snapshots/<id>.json`` (manifest of path → hash, mode, owner). Bait files are never captured.
Restoring a snapshot writes back every captured entry that differs and, by default, moves files
that appeared since (the ``.locked`` copies ransomware leaves) into ``root/displaced/<time>/``.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime

from hostward.agent.ransomware.policy import RansomwareError, RansomwarePolicy
from hostward.agent.wtp.backup import (
    BlobStore,
    Manifest,
    capture,
    load_manifest,
    matches,
    save_manifest,
    walk,
    write_entry,
)
from hostward.core.clock import Clock, SystemClock


@dataclass(frozen=True)
class SnapshotInfo:
    id: str
    taken_at: str
    files: int
    bytes: int


@dataclass(frozen=True)
class RestoreResult:
    snapshot_id: str
    restored: list[str]
    displaced: list[str]


class SnapshotStore:
    def __init__(self, root: str, *, keep: int = 7, clock: Clock | None = None) -> None:
        self.root = root
        self.keep = keep
        self.clock = clock or SystemClock()
        self.store = BlobStore(root)
        self.dir = os.path.join(root, "snapshots")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def take(self, policy: RansomwarePolicy, skip: Callable[[str], bool] = lambda _p: False) -> SnapshotInfo:
        """Capture every protected directory now; prunes to ``keep`` snapshots afterwards."""
        now = self.clock.now()
        snap_id = now.strftime("%Y%m%dT%H%M%S.%fZ")
        manifest: Manifest = {}
        for top in policy.protected_dirs:
            if os.path.isdir(top):
                manifest.update(capture(self.store, top, lambda p: policy.is_excluded(p) or skip(p)))
        files = [e for e in manifest.values() if e.kind == "file"]
        info = SnapshotInfo(snap_id, now.isoformat(), len(files), sum(e.size for e in files))
        save_manifest(
            os.path.join(self.dir, f"{snap_id}.json"),
            manifest,
            {"taken_at": info.taken_at, "dirs": policy.protected_dirs, "excluded": policy.excluded_dirs},
        )
        self.prune()
        return info

    def due(self, now: datetime, interval_s: float) -> bool:
        snaps = self.list()
        if not snaps:
            return True
        return (now - datetime.fromisoformat(snaps[-1].taken_at)).total_seconds() >= interval_s

    def list(self) -> list[SnapshotInfo]:
        """Snapshots, oldest first."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if not name.endswith(".json"):
                continue
            manifest, meta = load_manifest(os.path.join(self.dir, name))
            files = [e for e in manifest.values() if e.kind == "file"]
            out.append(SnapshotInfo(name[:-5], str(meta["taken_at"]), len(files), sum(e.size for e in files)))
        return out

    def prune(self) -> None:
        snaps = self.list()
        for old in snaps[: max(0, len(snaps) - self.keep)]:
            os.unlink(os.path.join(self.dir, f"{old.id}.json"))
        keep: set[str] = set()
        for s in self.list():
            manifest, _ = load_manifest(os.path.join(self.dir, f"{s.id}.json"))
            keep |= {e.sha256 for e in manifest.values() if e.sha256}
        self.store.gc(keep)

    def restore(
        self,
        snap_id: str,
        *,
        remove_new: bool = True,
        under: str | None = None,
        keep: Callable[[str], bool] = lambda _p: False,
        around: Callable[[Sequence[str]], AbstractContextManager[object]] = lambda _tops: nullcontext(),
    ) -> RestoreResult:
        """Put the tree(s) back as snapshot ``snap_id`` saw them (optionally only below ``under``).

        Files that are not in the snapshot are displaced unless ``keep(path)`` (bait files) or they
        lie in a directory the policy excluded when the snapshot was taken. The writes run inside
        ``around(tops)`` (web tamper protection lifts its lock there).
        """
        path = os.path.join(self.dir, f"{snap_id}.json")
        if os.sep in snap_id or not os.path.exists(path):
            raise RansomwareError(f"snapshot {snap_id!r} not found")
        manifest, meta = load_manifest(path)
        tops = [str(d) for d in meta.get("dirs", []) or []]  # type: ignore[attr-defined]
        excluded = RansomwarePolicy(excluded_dirs=[str(d) for d in meta.get("excluded", []) or []])  # type: ignore[attr-defined]
        if under is not None:
            under = os.path.normpath(under)
            manifest = {p: e for p, e in manifest.items() if p == under or p.startswith(under + "/")}
            tops = [under]
        restored: list[str] = []
        displaced: list[str] = []
        with around(tops):
            for p in sorted(manifest):
                entry = manifest[p]
                if not matches(p, entry):
                    if os.path.isdir(p) and not os.path.islink(p) and entry.kind != "dir":
                        displaced.append(self._displace(p))
                    write_entry(self.store, p, entry)
                    restored.append(p)
            if remove_new:
                for top in tops:
                    if not os.path.isdir(top):
                        continue
                    for p, st in list(walk(top, excluded.is_excluded)):
                        if p not in manifest and not stat.S_ISDIR(st.st_mode) and not keep(p):
                            displaced.append(self._displace(p))
        return RestoreResult(snap_id, restored, displaced)

    def _displace(self, path: str) -> str:
        area = os.path.join(self.root, "displaced", str(time.time_ns()))
        os.makedirs(area, mode=0o700, exist_ok=True)
        dest = os.path.join(area, os.path.basename(path))
        shutil.move(path, dest)
        return dest
