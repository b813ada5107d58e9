"""The block ledger: every IP block the agent applied, in ``<state_dir>/blocks.db`` (SQLite).

It is the source of truth for what the firewall set must hold: after a restart the enforcer re-applies
the active rows, and ``verify()`` re-adds what vanished from the kernel. Rows are never overlapping
while active (the enforcer merges a new prefix with the blocks it covers).
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from hostward.agent.state.db import open_db

DB_NAME = "blocks.db"

_MIGRATIONS = [
    (
        1,
        [
            """CREATE TABLE blocks (
                network TEXT PRIMARY KEY,
                service TEXT NOT NULL,
                reason TEXT NOT NULL DEFAULT '',
                attempts INTEGER NOT NULL DEFAULT 0,
                times_blocked INTEGER NOT NULL DEFAULT 1,
                first_blocked_at REAL NOT NULL,
                blocked_at REAL NOT NULL,
                until REAL NOT NULL,
                status TEXT NOT NULL,
                updated_at REAL NOT NULL
            )""",
            "CREATE INDEX blocks_status_until ON blocks (status, until)",
        ],
    ),
]


@dataclass(frozen=True)
class BlockEntry:
    """One block as the enforcer applies it: ``network`` in canonical CIDR text, ``until`` epoch."""

    network: str
    service: str
    until: float
    reason: str = ""
    attempts: int = 0
    times_blocked: int = 1
    blocked_at: float = 0.0


@dataclass(frozen=True)
class LedgerRow(BlockEntry):
    status: str = "active"  # active | unblocked | expired | merged
    first_blocked_at: float = 0.0


class BlockLedger:
    """Thread-safe access to the blocks table."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / DB_NAME
        self._conn = open_db(self.path, _MIGRATIONS)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def record(self, entry: BlockEntry, now: float) -> None:
        """Insert or re-activate a block (keeps the first block time)."""
        with self._lock:
            self._conn.execute(
                """INSERT INTO blocks (network, service, reason, attempts, times_blocked, first_blocked_at,
                                       blocked_at, until, status, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?)
                   ON CONFLICT (network) DO UPDATE SET
                     service = excluded.service, reason = excluded.reason, attempts = excluded.attempts,
                     times_blocked = MAX(blocks.times_blocked, excluded.times_blocked),
                     blocked_at = excluded.blocked_at, until = excluded.until, status = 'active',
                     updated_at = excluded.updated_at""",
                (
                    entry.network,
                    entry.service,
                    entry.reason,
                    entry.attempts,
                    entry.times_blocked,
                    entry.blocked_at or now,
                    entry.blocked_at or now,
                    entry.until,
                    now,
                ),
            )

    def set_status(self, networks: list[str], status: str, now: float) -> int:
        if not networks:
            return 0
        with self._lock:
            cur = self._conn.executemany(
                "UPDATE blocks SET status = ?, updated_at = ? WHERE network = ? AND status = 'active'",
                [(status, now, n) for n in networks],
            )
            return cur.rowcount

    def active(self, now: float) -> list[LedgerRow]:
        """Blocks that should be in the firewall now (``until`` in the future)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM blocks WHERE status = 'active' AND until > ? ORDER BY network", (now,)
            ).fetchall()
        return [_row(r) for r in rows]

    def get(self, network: str) -> LedgerRow | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM blocks WHERE network = ?", (network,)).fetchone()
        return None if row is None else _row(row)

    def all(self) -> list[LedgerRow]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM blocks ORDER BY updated_at DESC").fetchall()
        return [_row(r) for r in rows]

    def expire(self, now: float) -> list[str]:
        """Mark active blocks whose time is up as expired; their networks (the kernel drops them itself)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT network FROM blocks WHERE status = 'active' AND until <= ?", (now,)
            ).fetchall()
            networks = [r[0] for r in rows]
            self._conn.executemany(
                "UPDATE blocks SET status = 'expired', updated_at = ? WHERE network = ?",
                [(now, n) for n in networks],
            )
        return networks


def _row(r: sqlite3.Row) -> LedgerRow:
    return LedgerRow(
        network=r["network"],
        service=r["service"],
        until=r["until"],
        reason=r["reason"],
        attempts=r["attempts"],
        times_blocked=r["times_blocked"],
        blocked_at=r["blocked_at"],
        status=r["status"],
        first_blocked_at=r["first_blocked_at"],
    )
