"""File-mode collections for the file detectors: set-id files, and the state of shell binaries.

- ``collect_setid(dirs)``: every set-uid / set-gid regular file under ``dirs`` (no symlinks followed,
  one file system per directory, pseudo/network file systems skipped), hashed.
- ``collect_shells(shells, dirs)``: the shells' modes, owners and link counts, plus copies (same size and
  SHA-256), hard links (same inode) and symlinks to a shell found under ``dirs`` (odd places).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator

from hostward.agent.detectors.setid import SetidEntry
from hostward.agent.detectors.shells import ShellCopy, ShellSnapshot, ShellState
from hostward.agent.malware.mounts import MountTable

DEFAULT_SETID_DIRS = (
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/bin",
    "/sbin",
    "/usr/lib",
    "/usr/libexec",
    "/opt",
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/home",
    "/root",
    "/srv",
    "/var/www",
)
DEFAULT_SHELLS = (
    "/bin/sh",
    "/bin/bash",
    "/bin/dash",
    "/bin/rbash",
    "/bin/zsh",
    "/bin/ksh",
    "/bin/mksh",
    "/bin/tcsh",
    "/bin/csh",
    "/bin/fish",
    "/bin/busybox",
    "/usr/bin/sh",
    "/usr/bin/bash",
    "/usr/bin/dash",
    "/usr/bin/zsh",
    "/usr/bin/ksh",
    "/usr/bin/tcsh",
    "/usr/bin/fish",
    "/usr/bin/busybox",
)
ODD_PLACES = ("/tmp", "/var/tmp", "/dev/shm", "/home", "/root", "/var/www", "/srv", "/run/user")
MAX_FILES = 500_000
MAX_DEPTH = 12


def _hash(path: str) -> str:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    except OSError:
        return ""
    finally:
        os.close(fd)
    return h.hexdigest()


def _walk(dirs: Iterable[str], mounts: MountTable) -> Iterator[tuple[str, os.stat_result]]:
    """(path, lstat) of every entry under ``dirs``: no symlinks followed, no mount crossed, bounded."""
    count = 0
    for top in dirs:
        try:
            top_st = os.lstat(top)
        except OSError:
            continue
        if not stat.S_ISDIR(top_st.st_mode) or mounts.skipped(os.fsencode(top)):
            continue
        stack = [(top, 0)]
        while stack:
            d, depth = stack.pop()
            try:
                it = os.scandir(d)
            except OSError:
                continue
            with it:
                for entry in it:
                    count += 1
                    if count > MAX_FILES:
                        return
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if st.st_dev == top_st.st_dev and depth < MAX_DEPTH:
                            stack.append((entry.path, depth + 1))
                        continue
                    yield entry.path, st


def collect_setid(
    dirs: Iterable[str] = DEFAULT_SETID_DIRS, mounts: MountTable | None = None
) -> dict[str, SetidEntry]:
    """Set-id regular files under ``dirs`` by path."""
    mounts = mounts if mounts is not None else MountTable.read()
    out: dict[str, SetidEntry] = {}
    for path, st in _walk(dirs, mounts):
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            out[path] = SetidEntry(
                path,
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_size,
                st.st_mtime_ns,
                st.st_dev,
                st.st_ino,
                _hash(path),
            )
    return out


def collect_shells(
    shells: Iterable[str] = DEFAULT_SHELLS,
    dirs: Iterable[str] = ODD_PLACES,
    mounts: MountTable | None = None,
) -> ShellSnapshot:
    """The shells' state and their copies/links under ``dirs``."""
    mounts = mounts if mounts is not None else MountTable.read()
    states: dict[str, ShellState] = {}
    for p in shells:
        real = os.path.realpath(p)
        if real in states:
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        states[real] = ShellState(
            real, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_dev, st.st_ino, st.st_size, _hash(real)
        )
    by_inode = {(s.dev, s.ino): s for s in states.values()}
    by_size: dict[int, list[ShellState]] = {}
    for s in states.values():
        by_size.setdefault(s.size, []).append(s)
    copies: dict[str, ShellCopy] = {}
    for path, st in _walk(dirs, mounts):
        if stat.S_ISLNK(st.st_mode):
            target = os.path.realpath(path)
            if target in states:
                copies[path] = ShellCopy(path, "symlink", target, st.st_mode, st.st_uid, st.st_gid)
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        same = by_inode.get((st.st_dev, st.st_ino))
        if same is not None:
            copies[path] = ShellCopy(path, "hardlink", same.path, st.st_mode, st.st_uid, st.st_gid)
            continue
        candidates = by_size.get(st.st_size)
        if candidates:
            digest = _hash(path)
            for s in candidates:
                if digest and digest == s.sha256:
                    copies[path] = ShellCopy(path, "copy", s.path, st.st_mode, st.st_uid, st.st_gid)
                    break
    return ShellSnapshot(states, copies)
