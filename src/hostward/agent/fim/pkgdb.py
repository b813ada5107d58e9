"""Package databases: which package owns a path, and does the file match what the package shipped.

A change to a package-owned file whose new digest equals the one in the package database is a package
update, not tampering. dpkg: ``/var/lib/dpkg/info/*.md5sums`` (MD5 of every shipped file) and the
``Conffiles`` fields of ``/var/lib/dpkg/status``; the index is refreshed incrementally (only md5sums
files whose mtime moved are re-read) and remembers paths that left the database (removed by a package
removal or upgrade). rpm: ``rpm -qf --dump`` per path (digest algorithm by length: MD5 or SHA-256).

While dpkg holds its lock an upgrade is half done (``.dpkg-new`` files, md5sums not yet in place), so
the engine defers classification until the lock is released: ``busy()`` tests the lock with
``F_GETLK`` (never taking it).

``db_root`` points at another dpkg database and ``fs_root`` maps monitored paths onto package paths
(``fs_root/usr/bin/ls`` is the package's ``/usr/bin/ls``), which is how tests point the lookup at a copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

# Directories a merged-/usr system reaches through /bin -> usr/bin and friends; dpkg may record either.
_USRMERGE = (b"bin", b"sbin", b"lib", b"lib32", b"lib64", b"libx32")
DROPPED_TTL_S = 3600.0
CACHE_VERSION = 1
# The cache is written only when the database has been still this long: file times are coarse, and a
# dpkg run in the same clock tick as the one before it would otherwise leave the key unchanged.
CACHE_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True)
class Owner:
    manager: Literal["dpkg", "rpm"]
    package: str
    algorithm: str  # "md5" or "sha256"
    digest: str  # hex; "" when the package database has none (directories, symlinks)


class PackageIndex(Protocol):
    manager: Literal["dpkg", "rpm"]

    def refresh(self) -> None:
        """Catch up with the package database (called before each batch of lookups)."""
        ...

    def owner(self, path: bytes) -> Owner | None: ...

    def dropped(self, path: bytes) -> str | None:
        """The package that owned ``path`` until it recently left the database, if any."""
        ...

    def busy(self) -> bool: ...

    def activity(self) -> object:
        """A token that changes whenever the package database is written (compare two samples)."""
        ...


def file_digest(path: bytes, algorithm: str) -> str | None:
    """Hex digest of a regular file (None when it cannot be read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return hashlib.file_digest(f, algorithm).hexdigest()
    except OSError:
        return None
    finally:
        os.close(fd)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # struct flock: l_type, l_whence, l_start, l_len, l_pid (native layout, padded to 32 bytes).
        query = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0).ljust(32, b"\0")
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        return struct.unpack_from("h", answer)[0] != fcntl.F_UNLCK
    except OSError:
        return False
    finally:
        os.close(fd)


class DpkgIndex:
    """Package paths -> (package, md5) from the dpkg database, refreshed as it changes."""

    manager: Literal["dpkg", "rpm"] = "dpkg"

    def __init__(
        self,
        db_root: Path | str = "/",
        fs_root: bytes = b"/",
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_file: Path | str | None = None,
    ) -> None:
        self.db_root = Path(db_root)
        self.info_dir = self.db_root / "var/lib/dpkg/info"
        self.status_file = self.db_root / "var/lib/dpkg/status"
        self.fs_root = fs_root.rstrip(b"/")
        self._clock = clock
        self._files: dict[str, tuple[int, list[bytes]]] = {}  # md5sums file -> (mtime_ns, paths)
        self._index: dict[bytes, tuple[str, str]] = {}  # b"/usr/bin/ls" -> (package, md5)
        self._conffiles: dict[bytes, tuple[str, str]] = {}
        self._status_mtime = -1
        self._info_mtime = -1
        self._dropped: dict[bytes, tuple[str, float]] = {}
        self._merged = {d for d in _USRMERGE if os.path.islink(os.path.join(os.fsencode(self.db_root), d))}
        self._interest: tuple[bytes, ...] | None = None
        self._needle: re.Pattern[bytes] | None = None
        self.refreshed = False
        # A one-shot process (``hostward fim check``) would re-read every md5sums file each run; the
        # index it builds (filtered to the interest) is kept here, valid while the database is unchanged.
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.cache_used = False

    def set_interest(self, paths: list[bytes] | None) -> None:
        """Index only package paths under these monitored paths (None: everything).

        Most of the work of a refresh is per line; a monitored set touches few packages, so files that
        mention none of these prefixes are skipped after one substring search.
        """
        if paths is None:
            interest = None
        else:
            rels: set[bytes] = set()
            for path in paths:
                ppath = self._package_path(path)
                if ppath is None:
                    continue
                for alias in self._aliases(ppath):
                    rels.add(alias.lstrip(b"/"))
            interest = tuple(sorted(rels))
        if interest != self._interest:
            self._interest = interest
            self._needle = (
                re.compile(b"  (?:" + b"|".join(re.escape(r) for r in interest) + b")") if interest else None
            )
            self._files.clear()
            self._index.clear()
            self._info_mtime = self._status_mtime = -1
            self.refreshed = False

    @classmethod
    def available(cls, db_root: Path | str = "/") -> bool:
        return (Path(db_root) / "var/lib/dpkg/info").is_dir()

    # ---- index maintenance ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Bring the index up to date (cheap when nothing changed: one stat of the info directory)."""
        started = time.time_ns()
        try:
            info_mtime = self.info_dir.stat().st_mtime_ns
        except OSError:
            return
        try:
            status_mtime = self.status_file.stat().st_mtime_ns
        except OSError:
            status_mtime = -1
        if not self._files and self._info_mtime == -1 and self._load_cache(info_mtime, status_mtime):
            self.refreshed = True
            return
        changed = info_mtime != self._info_mtime
        if changed:
            self._refresh_md5sums()
            self._info_mtime = info_mtime
        if status_mtime != self._status_mtime:
            self._conffiles = self._read_conffiles()
            self._status_mtime = status_mtime
            changed = True
        if changed and max(info_mtime, status_mtime) < started - CACHE_SETTLE_NS:
            self._save_cache()
        self.refreshed = True

    # ---- the on-disk cache of the index ---------------------------------------------------------

    def _cache_key(self, info_mtime: int, status_mtime: int) -> list[object]:
        interest = None if self._interest is None else [r.hex() for r in self._interest]
        return [
            CACHE_VERSION,
            os.fspath(self.db_root),
            self.fs_root.hex(),
            sorted(m.hex() for m in self._merged),
            interest,
            info_mtime,
            status_mtime,
        ]

    def _load_cache(self, info_mtime: int, status_mtime: int) -> bool:
        """Take the index from the cache file when it was built from this very database state."""
        if self.cache_file is None:
            return False
        try:
            data = json.loads(self.cache_file.read_bytes())
            if data["key"] != self._cache_key(info_mtime, status_mtime):
                return False
            files: dict[str, tuple[int, list[bytes]]] = {}
            index: dict[bytes, tuple[str, str]] = {}
            for name, (mtime, package, entries) in data["files"].items():
                paths = []
                for rel, digest in entries:
                    path = bytes.fromhex(rel)
                    index[path] = (package, digest)
                    paths.append(path)
                files[name] = (int(mtime), paths)
            conffiles = {bytes.fromhex(p): (pkg, digest) for p, pkg, digest in data["conffiles"]}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False  # missing, unreadable, damaged or from another version: rebuild it
        self._files, self._index, self._conffiles = files, index, conffiles
        self._info_mtime, self._status_mtime = info_mtime, status_mtime
        self._dropped.clear()
        self.cache_used = True
        return True

    def _save_cache(self) -> None:
        if self.cache_file is None:
            return
        index = self._index
        files: dict[str, list[object]] = {}
        for name, (mtime, paths) in self._files.items():
            package = name[: -len(".md5sums")].split(":", 1)[0]
            # The last file read wins in the index when two packages list a path: keep that answer.
            entries = [[p.hex(), index[p][1]] for p in paths if index.get(p, ("",))[0] == package]
            files[name] = [mtime, package, entries]
        data = {
            "key": self._cache_key(self._info_mtime, self._status_mtime),
            "files": files,
            "conffiles": [[p.hex(), pkg, digest] for p, (pkg, digest) in self._conffiles.items()],
        }
        tmp = self.cache_file.with_name(self.cache_file.name + f".{os.getpid()}.tmp")
        try:
            # O_EXCL | O_NOFOLLOW: never written through a link someone left in a shared directory.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, separators=(",", ":"))
            os.replace(tmp, self.cache_file)
        except FileExistsError:
            return  # not ours: leave it
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def _refresh_md5sums(self) -> None:
        seen: set[str] = set()
        first = not self._files
        try:
            it = os.scandir(self.info_dir)
        except OSError:
            return
        with it:
            for e in it:
                if not e.name.endswith(".md5sums"):
                    continue
                seen.add(e.name)
                try:
                    mtime = e.stat().st_mtime_ns
                except OSError:
                    continue
                old = self._files.get(e.name)
                if old is not None and old[0] == mtime:
                    continue
                package = e.name[: -len(".md5sums")].split(":", 1)[0]
                paths = self._read_md5sums(e.path, package)
                if old is not None:
                    self._drop(set(old[1]) - set(paths), package)
                self._files[e.name] = (mtime, paths)
        for name in set(self._files) - seen:
            _, paths = self._files.pop(name)
            self._drop(set(paths), name[: -len(".md5sums")].split(":", 1)[0])
        if first:
            self._dropped.clear()

    def _drop(self, paths: set[bytes], package: str) -> None:
        now = self._clock()
        for p in paths:
            entry = self._index.get(p)
            if entry is not None and entry[0] == package:
                del self._index[p]
                self._dropped[p] = (package, now)

    def _read_md5sums(self, file: str, package: str) -> list[bytes]:
        paths: list[bytes] = []
        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError:
            return paths
        index = self._index
        interest = self._interest
        if interest is not None and (self._needle is None or self._needle.search(data) is None):
            return paths
        for line in data.splitlines():
            digest, sep, rel = line.partition(b"  ")
            if not sep or len(digest) != 32 or (interest is not None and not rel.startswith(interest)):
                continue
            path = b"/" + rel
            index[path] = (package, digest.decode("ascii"))
            paths.append(path)
        return paths

    def _read_conffiles(self) -> dict[bytes, tuple[str, str]]:
        out: dict[bytes, tuple[str, str]] = {}
        interest = self._interest  # like the md5sums: only paths under the monitored ones
        try:
            data = self.status_file.read_bytes()
        except OSError:
            return out
        for stanza in data.split(b"\n\n"):
            if b"\nConffiles:" not in stanza and not stanza.startswith(b"Conffiles:"):
                continue
            package = ""
            in_conf = False
            for line in stanza.split(b"\n"):
                if line.startswith(b"Package:"):
                    package = line[8:].strip().decode("utf-8", "replace")
                    in_conf = False
                elif line.startswith(b"Conffiles:"):
                    in_conf = True
                elif in_conf and line.startswith(b" "):
                    parts = line.split()
                    if (
                        len(parts) >= 2
                        and len(parts[1]) == 32
                        and (interest is None or parts[0][1:].startswith(interest))
                    ):
                        out[parts[0]] = (package, parts[1].decode("ascii"))
                else:
                    in_conf = False
        return out

    # ---- lookups --------------------------------------------------------------------------------

    def _package_path(self, path: bytes) -> bytes | None:
        if self.fs_root:
            if not path.startswith(self.fs_root + b"/"):
                return None
            return path[len(self.fs_root) :]
        return path

    def _aliases(self, ppath: bytes) -> list[bytes]:
        out = [ppath]
        parts = ppath.split(b"/", 3)  # b"", b"usr", b"bin", rest
        if len(parts) >= 3 and parts[1] == b"usr" and parts[2] in self._merged:
            out.append(b"/" + b"/".join(parts[2:]))
        elif len(parts) >= 2 and parts[1] in self._merged:
            out.append(b"/usr" + ppath)
        return out

    def owner(self, path: bytes) -> Owner | None:
        if not self.refreshed:
            self.refresh()
        ppath = self._package_path(path)
        if ppath is None:
            return None
        for candidate in self._aliases(ppath):
            hit = self._conffiles.get(candidate) or self._index.get(candidate)
            if hit is not None:
                return Owner("dpkg", hit[0], "md5", hit[1])
        return None

    def dropped(self, path: bytes) -> str | None:
        ppath = self._package_path(path)
        if ppath is None:
            return None
        now = self._clock()
        for candidate in self._aliases(ppath):
            hit = self._dropped.get(candidate)
            if hit is not None and now - hit[1] < DROPPED_TTL_S:
                return hit[0]
        return None

    def busy(self) -> bool:
        lock_dir = self.db_root / "var/lib/dpkg"
        return _lock_held(lock_dir / "lock-frontend") or _lock_held(lock_dir / "lock")

    def activity(self) -> object:
        # dpkg journals into updates/ during a run and rewrites status (and info/) as it goes.
        base = self.db_root / "var/lib/dpkg"
        return tuple(_mtime(base / name) for name in ("status", "updates", "info"))


def parse_rpm_dump(text: str) -> dict[bytes, str]:
    """``rpm -q --dump`` lines (path size mtime digest mode owner group isconfig isdoc rdev symlink)."""
    out: dict[bytes, str] = {}
    for line in text.splitlines():
        parts = line.rsplit(" ", 10)
        if len(parts) != 11:
            continue
        out[os.fsencode(parts[0])] = parts[3]
    return out


class RpmIndex:
    """Owner lookups through the ``rpm`` command (one query per changed path)."""

    manager: Literal["dpkg", "rpm"] = "rpm"

    def __init__(self, rpm: str | None = None, *, timeout: float = 10.0) -> None:
        self.rpm = rpm or shutil.which("rpm") or "rpm"
        self.timeout = timeout

    @classmethod
    def available(cls) -> bool:
        return shutil.which("rpm") is not None and any(
            Path(p).exists() for p in ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
        )

    def _run(self, *args: str | bytes) -> str | None:
        try:
            done = subprocess.run([self.rpm, *args], capture_output=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            return None
        return done.stdout.decode("utf-8", "surrogateescape")

    def owner(self, path: bytes) -> Owner | None:
        name = self._run("-qf", "--qf", "%{NAME}\\n", path)
        if not name or not name.strip():
            return None
        package = name.splitlines()[0].strip()
        dump = self._run("-qf", "--dump", path)
        digest = parse_rpm_dump(dump or "").get(path, "")
        if set(digest) == {"0"}:
            digest = ""
        algorithm = "md5" if len(digest) == 32 else "sha256"
        return Owner("rpm", package, algorithm, digest)

    def refresh(self) -> None:
        return None

    def dropped(self, path: bytes) -> str | None:
        return None

    def activity(self) -> object:
        return tuple(
            _mtime(Path(d) / f)
            for d in ("/var/lib/rpm", "/usr/lib/sysimage/rpm")
            for f in ("", "rpmdb.sqlite", "Packages", "Packages.db")
        )

    def busy(self) -> bool:
        return _lock_held(Path("/var/lib/rpm/.rpm.lock")) or _lock_held(
            Path("/usr/lib/sysimage/rpm/.rpm.lock")
        )


def system_index(cache_file: Path | str | None = None) -> PackageIndex | None:
    """The package database of this host (dpkg first), or None when there is none.

    ``cache_file``: where a dpkg index may keep what it read between processes (see ``DpkgIndex``).
    """
    if DpkgIndex.available():
        return DpkgIndex(cache_file=cache_file)
    if RpmIndex.available():
        return RpmIndex()
    return None
