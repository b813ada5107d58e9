"""Compare two states of the monitored paths: pure logic, no I/O.

``diff(previous, current)`` returns ``Change`` records: added, removed, changed (with the changed
attribute names) and moved (a removed and an added path with the same inode and content). Attribute
names are the ones reports and alarms use: type, mode, uid, gid, size, inode, mtime, ctime, sha256,
flags, xattrs, target, error.
"""

from __future__ import annotations

import grp
import math
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

from hostward.agent.fim.model import (
    FS_APPEND_FL,
    FS_IMMUTABLE_FL,
    P_CTIME,
    P_ERR,
    P_FLAGS,
    P_GID,
    P_INO,
    P_MODE,
    P_MTIME,
    P_SHA,
    P_SIZE,
    P_TARGET,
    P_UID,
    P_XATTRS,
    Entry,
    Row,
    unpack_xattrs,
)

Action = Literal["added", "removed", "changed", "moved"]
Operation = Literal["create", "delete", "move", "modify", "attributes"]
Label = Literal["change", "package_update"]

# Position of each reported attribute in a row; "type" and "mode" both come from st_mode.
_FIELDS: tuple[tuple[str, int], ...] = (
    ("sha256", P_SHA),
    ("size", P_SIZE),
    ("mode", P_MODE),
    ("uid", P_UID),
    ("gid", P_GID),
    ("inode", P_INO),
    ("mtime", P_MTIME),
    ("ctime", P_CTIME),
    ("flags", P_FLAGS),
    ("xattrs", P_XATTRS),
    ("target", P_TARGET),
    ("error", P_ERR),
)
CONTENT_ATTRS = frozenset({"type", "sha256", "size", "target"})
METADATA_ATTRS = frozenset({"mode", "uid", "gid", "flags", "xattrs"})


@dataclass(frozen=True)
class PackageInfo:
    """The package that owns a path, and whether the path's content matches what the package shipped."""

    manager: Literal["dpkg", "rpm"]
    package: str
    matches: bool


@dataclass(frozen=True)
class ProcessInfo:
    """The process that changed a file, as far as the kernel told us (fanotify)."""

    pid: int
    exe: str = ""
    uid: int | None = None
    user: str = ""
    cmdline: str = ""


@dataclass(frozen=True)
class Change:
    """One difference between the baseline and the file system."""

    path: bytes
    action: Action
    attrs: tuple[str, ...] = ()
    old: Entry | None = None
    new: Entry | None = None
    moved_from: bytes | None = None
    package: PackageInfo | None = None
    process: ProcessInfo | None = None
    important: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> Label:
        return "package_update" if self.package is not None and self.package.matches else "change"

    @property
    def operation(self) -> Operation:
        if self.action == "added":
            return "create"
        if self.action == "removed":
            return "delete"
        if self.action == "moved":
            return "move"
        return "modify" if CONTENT_ATTRS.intersection(self.attrs) or "mtime" in self.attrs else "attributes"

    @property
    def is_dir(self) -> bool:
        entry = self.new or self.old
        return entry is not None and stat.S_ISDIR(entry.mode)

    def significant(self) -> bool:
        """False for changes that only echo others: a ctime-only bump (link count, a no-op chmod), a
        directory whose mtime/size moved because an entry was added or removed (reported itself)."""
        if self.action != "changed":
            return True
        rest = set(self.attrs) - {"ctime"}
        if self.is_dir:
            rest -= {"mtime", "size"}
        return bool(rest)

    def with_(self, **values: Any) -> Change:
        if not values.keys() <= _CHANGE_FIELDS:
            return replace(self, **values)  # raises the usual TypeError
        # ``replace`` re-runs ``__init__`` through keyword arguments: too slow for thousands of changes.
        clone = object.__new__(Change)
        clone.__dict__.update(self.__dict__, **values)
        return clone


_CHANGE_FIELDS = frozenset(f.name for f in fields(Change))


def compare(old: Row, new: Row) -> tuple[str, ...]:
    """Names of the attributes that differ between two rows of the same path."""
    changed = [name for name, i in _FIELDS if old[i] != new[i]]
    if "mode" in changed and stat.S_IFMT(old[P_MODE]) != stat.S_IFMT(new[P_MODE]):
        changed.insert(0, "type")
        if stat.S_IMODE(old[P_MODE]) == stat.S_IMODE(new[P_MODE]):
            changed.remove("mode")
    return tuple(changed)


def diff(
    previous: Mapping[bytes, Row], current: Mapping[bytes, Row], *, detect_moves: bool = True
) -> list[Change]:
    """Changes from ``previous`` to ``current`` (both path -> row), sorted by path."""
    changes: list[Change] = []
    removed = [p for p in previous if p not in current]
    added = [p for p in current if p not in previous]
    for path, new in current.items():
        old = previous.get(path)
        if old is None or old is new or old == new:
            continue
        changes.append(Change(path, "changed", compare(old, new), Entry._make(old), Entry._make(new)))
    moved_from: dict[bytes, bytes] = {}
    if detect_moves and removed and added:
        by_identity: dict[tuple[int, bytes], bytes] = {}
        for p in removed:
            row = previous[p]
            if row[P_SHA] is not None:
                by_identity[(row[P_INO], row[P_SHA])] = p
        for p in added:
            row = current[p]
            if row[P_SHA] is not None:
                src = by_identity.pop((row[P_INO], row[P_SHA]), None)
                if src is not None:
                    moved_from[p] = src
    gone = set(moved_from.values())
    for p in removed:
        if p not in gone:
            changes.append(Change(p, "removed", (), Entry._make(previous[p]), None))
    for p in added:
        src = moved_from.get(p)
        if src is None:
            changes.append(Change(p, "added", (), None, Entry._make(current[p])))
        else:
            old, new = previous[src], current[p]
            attrs = tuple(a for a in compare(old, new) if a != "ctime")  # a rename always bumps ctime
            changes.append(Change(p, "moved", attrs, Entry._make(old), Entry._make(new), moved_from=src))
    changes.sort(key=lambda c: c.path)
    return changes


# ---- presentation (reports, alarm evidence) ----------------------------------------------------


def display_path(path: bytes) -> str:
    """A path as text; bytes that are not UTF-8 appear as ``\\xNN``."""
    return path.decode("utf-8", "backslashreplace")


@lru_cache(maxsize=1024)
def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


@lru_cache(maxsize=4096)
def _ts_seconds(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")[:-6]


def _ts(ns: int) -> str:
    """``datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")``, cheaper.

    A report holds two times per entry and most share their second: the date part is cached, the
    microseconds are rounded the way ``fromtimestamp`` rounds them (half to even, of the float).
    """
    fraction, whole = math.modf(ns / 1e9)
    us = round(fraction * 1e6)
    if us >= 1_000_000:
        whole += 1.0
        us -= 1_000_000
    elif us < 0:
        whole -= 1.0
        us += 1_000_000
    return f"{_ts_seconds(int(whole))}.{us:06d}+00:00"


def flags_text(flags: int | None) -> str:
    if flags is None:
        return "unsupported"
    return ("i" if flags & FS_IMMUTABLE_FL else "") + ("a" if flags & FS_APPEND_FL else "") or "-"


def _xattr_text(blob: bytes | None) -> dict[str, str]:
    out = {}
    for name, value in unpack_xattrs(blob).items():
        try:
            text = value.decode("utf-8")
            out[name] = text if text.isprintable() else "0x" + value.hex()
        except UnicodeDecodeError:
            out[name] = "0x" + value.hex()
    return out


def type_name(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "char_device"),
        (stat.S_ISBLK, "block_device"),
    ):
        if test(mode):
            return name
    return "unknown"


_ATTR_VALUE: dict[str, Callable[[Entry], Any]] = {
    "type": lambda e: type_name(e.mode),
    "mode": lambda e: f"{stat.S_IMODE(e.mode):04o}",
    "uid": lambda e: {"id": e.uid, "name": _user(e.uid)},
    "gid": lambda e: {"id": e.gid, "name": _group(e.gid)},
    "size": lambda e: e.size,
    "inode": lambda e: e.ino,
    "mtime": lambda e: _ts(e.mtime_ns),
    "ctime": lambda e: _ts(e.ctime_ns),
    "sha256": lambda e: e.sha256.hex() if e.sha256 is not None else None,
    "flags": lambda e: flags_text(e.flags),
    "xattrs": lambda e: _xattr_text(e.xattrs),
    "target": lambda e: display_path(e.target) if e.target is not None else None,
    "error": lambda e: e.error,
}


def attr_value(entry: Entry, attr: str) -> Any:
    """One attribute of ``entry`` in its reported (JSON-friendly) form."""
    return _ATTR_VALUE[attr](entry)


ALL_ATTRS = (
    "type",
    "mode",
    "uid",
    "gid",
    "size",
    "inode",
    "mtime",
    "ctime",
    "sha256",
    "flags",
    "xattrs",
    "target",
    "error",
)


def entry_dict(entry: Entry) -> dict[str, Any]:
    """Every attribute of ``entry`` (None-valued ones left out)."""
    out: dict[str, Any] = {}
    for attr, value_of in _ATTR_VALUE.items():
        value = value_of(entry)
        if value is not None and value != {}:
            out[attr] = value
    return out


def change_dict(change: Change) -> dict[str, Any]:
    """A change as JSON-friendly data (CLI ``--json``, record events)."""
    entry = change.new or change.old
    out: dict[str, Any] = {
        "path": display_path(change.path),
        "action": change.action,
        "operation": change.operation,
        "label": change.label,
        "type": type_name(entry.mode) if entry is not None else "unknown",
    }
    if change.moved_from is not None:
        out["moved_from"] = display_path(change.moved_from)
    if change.action in ("changed", "moved"):
        assert change.old is not None and change.new is not None
        out["attributes"] = list(change.attrs)
        out["old"] = {a: attr_value(change.old, a) for a in change.attrs}
        out["new"] = {a: attr_value(change.new, a) for a in change.attrs}
    elif change.action == "added" and change.new is not None:
        out["new"] = entry_dict(change.new)
    elif change.old is not None:
        out["old"] = entry_dict(change.old)
    if change.package is not None:
        out["package"] = {
            "manager": change.package.manager,
            "name": change.package.package,
            "matches": change.package.matches,
        }
    if change.process is not None:
        out["process"] = {
            "pid": change.process.pid,
            "exe": change.process.exe,
            "uid": change.process.uid,
            "user": change.process.user,
            "cmdline": change.process.cmdline,
        }
    return out
