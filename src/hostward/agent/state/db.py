"""Private SQLite files for the agent: 0600 files in a 0700 directory, WAL, versioned schema."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from hostward.agent.errors import AgentError

Migration = tuple[int, Sequence[str]]


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make it 0700: it holds the agent key."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _restrict(path: Path) -> None:
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        if candidate.exists():
            os.chmod(candidate, 0o600)


def open_db(path: Path, migrations: Sequence[Migration], *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating when needed) ``path`` and bring its schema up to the last migration.

    The connection may be used from several threads; callers serialise access with their own lock.
    """
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5.0)
        conn.row_factory = sqlite3.Row
        return conn
    ensure_private_dir(path.parent)
    if not path.exists():
        # Create with 0600 before SQLite opens it, so the key is never readable by others.
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    conn = sqlite3.connect(path, check_same_thread=False, timeout=5.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    _migrate(conn, path, migrations)
    _restrict(path)
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = int(row[0] or 0)
    latest = max((v for v, _ in migrations), default=0)
    if current > latest:
        raise AgentError(f"{path}: schema version {current} is newer than this agent understands ({latest})")
    for version, statements in sorted(migrations):
        if version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)
