"""Auto-start items: enabled systemd units, cron tables, rc scripts and ld.so.preload, with content hashes."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hostward.wire import AutoStartItem

SYSTEMD_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
CRON_TABLE_DIRS = ("var/spool/cron/crontabs", "var/spool/cron")
CRON_PERIODIC = ("cron.hourly", "cron.daily", "cron.weekly", "cron.monthly")
DEFAULT_MAX_HASH_BYTES = 16 * 1024 * 1024
_SKIP_NAMES = {".placeholder", "README", ".keep", ".gitkeep"}


def resolve_in_root(root: Path, path: Path, max_hops: int = 40) -> Path:
    """Follow symlinks of the last component, re-rooting absolute targets under ``root``."""
    if root == Path("/"):
        return path.resolve()
    current = path
    for _ in range(max_hops):
        if not current.is_symlink():
            return current
        target = os.readlink(current)
        if os.path.isabs(target):
            current = root / target.lstrip("/")
        else:
            current = Path(os.path.normpath(current.parent / target))
    return current


def shown_path(root: Path, path: Path) -> str:
    """``path`` as the host sees it (``/etc/...``), not as the prepared tree's location."""
    if root == Path("/"):
        return str(path)
    try:
        return "/" + str(path.relative_to(root))
    except ValueError:
        return str(path)


def file_sha256(path: Path, max_bytes: int = DEFAULT_MAX_HASH_BYTES) -> str:
    """SHA-256 of a regular file no larger than ``max_bytes``; "" otherwise (or when unreadable)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
            return ""
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return ""


def _files(directory: Path) -> list[Path]:
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    return [e for e in entries if e.name not in _SKIP_NAMES and not e.name.startswith(".") and e.is_file()]


class _Builder:
    def __init__(self, root: Path, max_hash_bytes: int) -> None:
        self.root = root
        self.max_hash_bytes = max_hash_bytes
        self.items: list[AutoStartItem] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, name: str, kind: str, path: Path, user: str = "") -> None:
        key = (kind, name)
        if key in self._seen:
            return
        self._seen.add(key)
        real = resolve_in_root(self.root, path)
        self.items.append(
            AutoStartItem(
                name=name,
                type=kind,
                path=shown_path(self.root, real),
                user=user,
                sha256=file_sha256(real, self.max_hash_bytes),
            )
        )


def systemd_units(b: _Builder) -> None:
    """Units enabled through ``*.wants``/``*.requires`` symlinks (what ``systemctl enable`` creates)."""
    for base in SYSTEMD_DIRS:
        directory = b.root / base
        if not directory.is_dir():
            continue
        for sub in sorted(directory.glob("*.wants")) + sorted(directory.glob("*.requires")):
            try:
                links = sorted(sub.iterdir())
            except OSError:
                continue
            for link in links:
                b.add(link.name, "service", link)


def cron_items(b: _Builder) -> None:
    crontab = b.root / "etc/crontab"
    if crontab.is_file():
        b.add("/etc/crontab", "cron", crontab, "root")
    for path in _files(b.root / "etc/cron.d"):
        b.add(f"/etc/cron.d/{path.name}", "cron", path, "root")
    for period in CRON_PERIODIC:
        for path in _files(b.root / "etc" / period):
            b.add(f"/etc/{period}/{path.name}", "cron", path, "root")
    for rel in CRON_TABLE_DIRS:
        for path in _files(b.root / rel):
            b.add(f"/{rel}/{path.name}", "cron", path, path.name)


def rc_scripts(b: _Builder) -> None:
    for path in _files(b.root / "etc/init.d"):
        b.add(path.name, "rc_script", path)
    rc_local = b.root / "etc/rc.local"
    if rc_local.is_file():
        b.add("rc.local", "rc_script", rc_local)


def preload_items(b: _Builder) -> None:
    """Libraries in /etc/ld.so.preload are loaded into every process: a classic rootkit foothold."""
    path = b.root / "etc/ld.so.preload"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    for token in text.split():
        if token.startswith("#"):
            continue
        lib = b.root / token.lstrip("/") if os.path.isabs(token) else b.root / token
        b.add(token, "preload", lib)


def collect_autostart(
    root: Path = Path("/"), max_hash_bytes: int = DEFAULT_MAX_HASH_BYTES
) -> list[AutoStartItem]:
    builder = _Builder(root, max_hash_bytes)
    for part in (systemd_units, cron_items, rc_scripts, preload_items):
        part(builder)
    return builder.items
