"""What a scan records: the ``Entry`` row layout, stat keys, packed xattrs, racy entries, results.

Rows are plain tuples in the ``Entry`` field order (also the order the baseline store rebuilds), so a
baseline row read from SQLite compares equal to a fresh scan of an unchanged file; building a NamedTuple
per file would cost measurable time, so ``Entry`` is only made for the few rows that are reported.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long)
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
TRACKED_FLAGS = FS_IMMUTABLE_FL | FS_APPEND_FL

CHUNK = 1024 * 1024  # read buffer for large files
RACY_NS = 2_000_000_000  # entries changed this close to their scan are rehashed on the next quick check
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
FS_ENCODING = sys.getfilesystemencoding()
FS_ERRORS = sys.getfilesystemencodeerrors()


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


Row = tuple  # an Entry-shaped plain tuple
# Row field positions
P_PATH, P_MODE, P_UID, P_GID, P_SIZE, P_INO, P_MTIME, P_CTIME, P_SHA, P_FLAGS, P_XATTRS, P_TARGET, P_ERR = (
    range(13)
)


def pack_xattrs(pairs: Iterable[tuple[str, bytes]]) -> bytes | None:
    """Canonical bytes for extended attributes: sorted, length-prefixed name and value."""
    out = bytearray()
    for name, value in sorted(pairs):
        raw = name.encode(FS_ENCODING, FS_ERRORS)
        out += len(raw).to_bytes(2, "big") + raw + len(value).to_bytes(4, "big") + value
    return bytes(out) or None


def unpack_xattrs(blob: bytes | None) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    if not blob:
        return result
    i = 0
    while i < len(blob):
        n = int.from_bytes(blob[i : i + 2], "big")
        name = blob[i + 2 : i + 2 + n].decode(FS_ENCODING, FS_ERRORS)
        i += 2 + n
        m = int.from_bytes(blob[i : i + 4], "big")
        result[name] = blob[i + 4 : i + 4 + m]
        i += 4 + m
    return result


# Packed (ino, size, mtime_ns, ctime_ns, mode, uid, gid): what a quick check compares.
KEY = struct.Struct("<QqqqIII")


def stat_key(row: Row) -> bytes:
    """What a quick check compares: inode, size, mtime, ctime, mode, uid, gid (packed)."""
    return KEY.pack(row[P_INO], row[P_SIZE], row[P_MTIME], row[P_CTIME], row[P_MODE], row[P_UID], row[P_GID])


def unpack_stat_key(key: bytes) -> tuple[int, int, int, int, int, int, int]:
    """(ino, size, mtime_ns, ctime_ns, mode, uid, gid) from ``stat_key``."""
    return KEY.unpack(key)


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
    """``rows``: freshly recorded paths; ``missing``: paths of ``keys`` that were not found (quick check);
    ``unchanged``: paths whose stat key matched (threaded scans list them; forked ones only count them
    in ``stats.reused``)."""

    rows: dict[bytes, Row]
    unchanged: set[bytes]
    stats: ScanStats
    racy: set[bytes]
    missing: set[bytes] = field(default_factory=set)
