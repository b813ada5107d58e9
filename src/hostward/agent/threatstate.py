"""Baselines of the file-threat checks kept across agent restarts (``procthreats``), in the agent's state
directory as small JSON files written atomically (temp file, fsync, rename).

- ``setid-baseline.json``: the set-uid/set-gid files last seen, with the directories and host root they
  were collected under. After a restart the first collection is compared with it, so files that gained
  a set-id bit while the agent was down are reported and the ones already known are not.
- ``shells-baseline.json``: the shells' state and the known copies/links of them, for the same reason
  (a permission change made while the agent was down is reported once, known copies are not repeated).

A file that is missing, unreadable, of another format version or collected under another host root is
ignored (the check then starts from a fresh, silent baseline); nothing here raises.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from hostward.agent.detectors.setid import SetidEntry
from hostward.agent.detectors.shells import ShellCopy, ShellSnapshot, ShellState

log = logging.getLogger(__name__)

SETID_FILE = "setid-baseline.json"
SHELLS_FILE = "shells-baseline.json"
FORMAT = 1


def _write(path: Path, data: dict[str, Any]) -> bool:
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("cannot save %s: %s", path, exc)
        return False


def _read(path: Path, host_root: str) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("host_root") != host_root:
        return None
    return data


def forget(state_dir: Path, name: str) -> None:
    """Remove one saved baseline (its check was switched off: switching on again starts silently)."""
    try:
        (state_dir / name).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", state_dir / name, exc)


def save_setid(
    state_dir: Path, host_root: str, dirs: tuple[str, ...], baseline: dict[str, SetidEntry]
) -> bool:
    entries = [
        [e.path, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.dev, e.ino, e.sha256] for e in baseline.values()
    ]
    data = {"format": FORMAT, "host_root": host_root, "dirs": list(dirs), "entries": entries}
    return _write(state_dir / SETID_FILE, data)


def load_setid(state_dir: Path, host_root: str) -> tuple[tuple[str, ...], dict[str, SetidEntry]] | None:
    """(dirs, baseline) as saved, or None."""
    data = _read(state_dir / SETID_FILE, host_root)
    if data is None:
        return None
    try:
        dirs = tuple(str(d) for d in data["dirs"])
        out: dict[str, SetidEntry] = {}
        for row in data["entries"]:
            path, mode, uid, gid, size, mtime_ns, dev, ino, sha = row
            out[str(path)] = SetidEntry(
                str(path),
                int(mode),
                int(uid),
                int(gid),
                int(size),
                int(mtime_ns),
                int(dev),
                int(ino),
                str(sha),
            )
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring %s: %s", state_dir / SETID_FILE, exc)
        return None
    return dirs, out


def save_shells(state_dir: Path, host_root: str, snapshot: ShellSnapshot) -> bool:
    shells = [
        [s.path, s.mode, s.uid, s.gid, s.nlink, s.dev, s.ino, s.size, s.sha256]
        for s in snapshot.shells.values()
    ]
    copies = [[c.path, c.kind, c.shell, c.mode, c.uid, c.gid] for c in snapshot.copies.values()]
    data = {"format": FORMAT, "host_root": host_root, "shells": shells, "copies": copies}
    return _write(state_dir / SHELLS_FILE, data)


def load_shells(state_dir: Path, host_root: str) -> ShellSnapshot | None:
    data = _read(state_dir / SHELLS_FILE, host_root)
    if data is None:
        return None
    try:
        shells: dict[str, ShellState] = {}
        for path, mode, uid, gid, nlink, dev, ino, size, sha in data["shells"]:
            shells[str(path)] = ShellState(
                str(path), int(mode), int(uid), int(gid), int(nlink), int(dev), int(ino), int(size), str(sha)
            )
        copies: dict[str, ShellCopy] = {}
        for path, kind, shell, mode, uid, gid in data["copies"]:
            copies[str(path)] = ShellCopy(str(path), str(kind), str(shell), int(mode), int(uid), int(gid))
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring %s: %s", state_dir / SHELLS_FILE, exc)
        return None
    return ShellSnapshot(shells, copies)
