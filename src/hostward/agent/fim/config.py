"""What file integrity monitoring watches: roots, the default important-file set, path -> root lookup.

A root is a file or a directory. Directory roots are recursive or not (a non-recursive root covers the
directory and its immediate children), carry ignore globs and the operations the operator wants to hear
about. Roots may nest: every path belongs to its most specific root, so one path is scanned once.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from hostward.agent.errors import AgentError

OPERATIONS = frozenset({"create", "delete", "move", "modify", "attributes"})
MAX_OPERATOR_ROOTS = 50
MAX_IGNORE_GLOBS = 50

_KEY_BINARIES = ("login", "ls", "ps", "bash", "passwd", "top", "killall", "ssh", "wget", "curl")
_KEY_FILES = (
    "/etc/passwd",
    "/etc/shadow",
    "/etc/group",
    "/etc/sudoers",
    "/etc/ssh/sshd_config",
    "/root/.ssh/authorized_keys",
    "/etc/crontab",
)
_KEY_DIRS = ("/etc/sudoers.d", "/etc/cron.d", "/var/spool/cron", "/etc/systemd/system")


class FimConfigError(AgentError):
    """A monitored path, glob or operation that cannot be used."""

    code = "fim_config_invalid"


@dataclass(frozen=True)
class WatchRoot:
    """One monitored path.

    ``important`` roots are the key system files (alarm ``fileprotect_0002``); operator directories are
    not (``fileprotect_0004``). ``operations`` filters what is reported, never what is recorded.
    """

    path: bytes
    recursive: bool = True
    important: bool = False
    ignore: tuple[str, ...] = ()
    operations: frozenset[str] = OPERATIONS
    _ignore_re: re.Pattern[bytes] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        path = self.path
        if isinstance(path, str):
            path = os.fsencode(path)
            object.__setattr__(self, "path", path)
        if not path.startswith(b"/"):
            raise FimConfigError(f"monitored path {os.fsdecode(path)!r} is not absolute")
        normal = os.path.normpath(path)
        if normal.startswith(b"//"):
            normal = b"/" + normal.lstrip(b"/")
        object.__setattr__(self, "path", normal)
        if len(self.ignore) > MAX_IGNORE_GLOBS:
            raise FimConfigError(f"{self.display}: at most {MAX_IGNORE_GLOBS} ignore globs")
        unknown = set(self.operations) - OPERATIONS
        if unknown:
            raise FimConfigError(
                f"{self.display}: unknown operations {sorted(unknown)} (known: {sorted(OPERATIONS)})"
            )
        object.__setattr__(self, "operations", frozenset(self.operations))
        if self.ignore:
            parts = [fnmatch.translate(g).encode("utf-8", "surrogateescape") for g in self.ignore]
            object.__setattr__(self, "_ignore_re", re.compile(b"|".join(b"(?:" + p + b")" for p in parts)))

    @property
    def display(self) -> str:
        return self.path.decode("utf-8", "backslashreplace")

    def ignored(self, path: bytes) -> bool:
        """True when a glob matches the full path or the base name."""
        rx = self._ignore_re
        if rx is None:
            return False
        return rx.match(path) is not None or rx.match(path.rpartition(b"/")[2]) is not None


def default_roots() -> list[WatchRoot]:
    """The important files of the reference product (key binaries, accounts, sudo, ssh, cron, units)."""
    roots = [
        WatchRoot(f"{d}/{name}".encode(), important=True)
        for d in ("/bin", "/usr/bin")
        for name in _KEY_BINARIES
    ]
    roots += [WatchRoot(p.encode(), important=True) for p in _KEY_FILES]
    roots += [WatchRoot(p.encode(), important=True) for p in _KEY_DIRS]
    return roots


def operator_roots(items: Iterable[WatchRoot]) -> list[WatchRoot]:
    """Validate operator directories: at most 50, never marked important."""
    roots = [WatchRoot(r.path, r.recursive, False, r.ignore, r.operations) for r in items]
    if len(roots) > MAX_OPERATOR_ROOTS:
        raise FimConfigError(f"at most {MAX_OPERATOR_ROOTS} monitored directories ({len(roots)} given)")
    return roots


def _parent(path: bytes) -> bytes:
    head = path.rpartition(b"/")[0]
    return head or b"/"


class RootSet:
    """Roots by path, and which root (if any) a path belongs to."""

    def __init__(self, roots: Sequence[WatchRoot]) -> None:
        by_path: dict[bytes, WatchRoot] = {}
        for root in roots:
            # A path listed twice keeps its first definition (the default set comes first).
            by_path.setdefault(root.path, root)
        self._by_path = by_path

    def __iter__(self) -> Iterator[WatchRoot]:
        return iter(self._by_path.values())

    def __len__(self) -> int:
        return len(self._by_path)

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    @property
    def roots(self) -> list[WatchRoot]:
        return list(self._by_path.values())

    def get(self, path: bytes) -> WatchRoot | None:
        return self._by_path.get(path)

    def owner(self, path: bytes) -> WatchRoot | None:
        """The most specific root containing ``path``, or None when ``path`` is not monitored."""
        by_path = self._by_path
        root = by_path.get(path)
        if root is not None:
            return root
        child = path
        cur = _parent(path)
        while True:
            root = by_path.get(cur)
            if root is not None:
                if not root.recursive and child != path:
                    return None
                if root.ignore and self._ignored_between(root, path):
                    return None
                return root
            if cur == b"/":
                return None
            child = cur
            cur = _parent(cur)

    @staticmethod
    def _ignored_between(root: WatchRoot, path: bytes) -> bool:
        # An ignored directory hides everything below it, as the walker never enters it.
        cur = path
        while cur != root.path and len(cur) > len(root.path):
            if root.ignored(cur):
                return True
            cur = _parent(cur)
        return False

    def roots_under(self, path: bytes) -> list[WatchRoot]:
        """Roots at or below ``path`` (a directory that appeared may bring missing roots into being)."""
        prefix = path.rstrip(b"/") + b"/"
        return [r for p, r in self._by_path.items() if p == path or p.startswith(prefix)]
