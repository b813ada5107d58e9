"""Cron entries from the system crontab, /etc/cron.d and the users' spool crontabs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hostward.agent.detectors.crontab import CronEntry

SYSTEM_TABLES = ("etc/crontab",)
SYSTEM_DIRS = ("etc/cron.d",)
USER_DIRS = ("var/spool/cron/crontabs", "var/spool/cron")  # Debian, then RHEL (files named by user)
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*=")
MAX_BYTES = 1024 * 1024


def parse_crontab(text: str, source: str, *, user: str | None) -> list[CronEntry]:
    """Entries of one crontab; ``user=None`` for system tables (the user is the sixth field)."""
    out: list[CronEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or _ENV.match(line):
            continue
        fields = line.split()
        sched_len = 1 if fields[0].startswith("@") else 5
        need = sched_len + (1 if user is None else 0) + 1
        if len(fields) < need:
            continue
        schedule = " ".join(fields[:sched_len])
        owner = fields[sched_len] if user is None else user
        # keep the command text as written (from the first command token on)
        parts = line.split(None, sched_len + (1 if user is None else 0))
        command = parts[-1]
        out.append(CronEntry(source, number, owner, schedule, command))
    return out


def _read(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def read_cron_entries(root: str = "/") -> list[CronEntry]:
    """Every cron entry on the host (``root`` re-roots the paths for tests)."""
    base = Path(root)
    out: list[CronEntry] = []
    for rel in SYSTEM_TABLES:
        text = _read(base / rel)
        if text is not None:
            out += parse_crontab(text, "/" + rel, user=None)
    for rel in SYSTEM_DIRS:
        d = base / rel
        if d.is_dir():
            for f in sorted(d.iterdir()):
                if f.is_file() and not f.is_symlink() and not f.name.startswith("."):
                    text = _read(f)
                    if text is not None:
                        out += parse_crontab(text, f"/{rel}/{f.name}", user=None)
    seen: set[str] = set()
    for rel in USER_DIRS:
        d = base / rel
        if not d.is_dir():
            continue
        for f in sorted(d.iterdir()):
            if not f.is_file() or f.is_symlink() or f.name.startswith(".") or os.fspath(f) in seen:
                continue
            seen.add(os.fspath(f))
            text = _read(f)
            if text is not None:
                out += parse_crontab(text, f"/{rel}/{f.name}", user=f.name)
    return out
