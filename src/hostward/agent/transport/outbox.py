"""On-disk outbox: every event is written here first and deleted only when the manager acknowledges it.

Bounded: above ``max_events`` the oldest non-alarm events are dropped first (alarms are what an operator
cannot afford to lose), and every drop is counted. The outbox survives restarts; each event carries an
idempotency key so a resend after a crash is acknowledged by the manager as ``duplicate``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from hostward.agent.state.db import open_db
from hostward.core.ids import new_id
from hostward.wire import Event, EventAck

log = logging.getLogger(__name__)

DB_NAME = "outbox.db"
DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024

_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, "
            "kind TEXT NOT NULL, alarm INTEGER NOT NULL, body TEXT NOT NULL)",
            "CREATE INDEX ix_events_alarm_seq ON events (alarm, seq)",
            "CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        ],
    ),
]

_EVENT = TypeAdapter(Event)
COUNTERS = ("accepted", "duplicate", "rejected", "dropped")


@dataclass(frozen=True)
class OutboxItem:
    """One stored event: its key and its JSON text, ready to be sent as is."""

    seq: int
    key: str
    kind: str
    body: str


@dataclass(frozen=True)
class AckSummary:
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    unknown: int = 0


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    alarms: int
    counters: dict[str, int]


class Outbox:
    """A bounded FIFO of wire events in SQLite; thread-safe."""

    def __init__(self, conn: sqlite3.Connection, path: Path, max_events: int) -> None:
        if max_events < 1:
            raise ValueError("max_events must be positive")
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path
        self.max_events = max_events
        self._depth = int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self._closed = False

    @classmethod
    def open(cls, state_dir: Path, max_events: int = 100_000) -> Outbox:
        path = state_dir / DB_NAME
        return cls(open_db(path, _MIGRATIONS), path, max_events)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, event: BaseModel | Mapping[str, Any]) -> str:
        """Store one event (assigning an idempotency key when it has none); returns the key."""
        return self.put_many([event])[0]

    def put_many(self, events: Iterable[BaseModel | Mapping[str, Any]]) -> list[str]:
        """Store events in order in one transaction (a scan's events land together or not at all)."""
        rows = [self._row(e) for e in events]
        if not rows:
            return []
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                inserted = 0
                for key, kind, alarm, body in rows:
                    cur = self._conn.execute(
                        "INSERT OR IGNORE INTO events (key, kind, alarm, body) VALUES (?, ?, ?, ?)",
                        (key, kind, alarm, body),
                    )
                    inserted += cur.rowcount
                dropped = self._trim(self._depth + inserted)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._depth = self._depth + inserted - dropped
        if dropped:
            log.warning("outbox full (%d events): dropped %d oldest events", self.max_events, dropped)
        return [r[0] for r in rows]

    @staticmethod
    def _row(event: BaseModel | Mapping[str, Any]) -> tuple[str, str, int, str]:
        data = event.model_dump(mode="json") if isinstance(event, BaseModel) else dict(event)
        if not data.get("key"):
            data["key"] = new_id()
        # Validate here, not at the manager: an event the manager cannot parse must fail at its source.
        model = _EVENT.validate_python(data)
        body = model.model_dump_json()
        return model.key, model.kind, int(model.kind == "alarm"), body

    def _trim(self, depth: int) -> int:
        excess = depth - self.max_events
        if excess <= 0:
            return 0
        dropped = 0
        for alarm in (0, 1):
            if excess - dropped <= 0:
                break
            cur = self._conn.execute(
                "DELETE FROM events WHERE seq IN "
                "(SELECT seq FROM events WHERE alarm = ? ORDER BY seq LIMIT ?)",
                (alarm, excess - dropped),
            )
            dropped += cur.rowcount
        self._bump("dropped", dropped)
        return dropped

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            self._conn.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, amount),
            )

    # ---- reading and acknowledging ---------------------------------------------------------------

    def batch(self, limit: int, max_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> list[OutboxItem]:
        """The oldest events, at most ``limit`` and about ``max_bytes`` (always at least one)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, key, kind, body FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        items: list[OutboxItem] = []
        size = 0
        for row in rows:
            body = row["body"]
            if items and size + len(body) > max_bytes:
                break
            size += len(body)
            items.append(OutboxItem(row["seq"], row["key"], row["kind"], body))
        return items

    def ack(self, acks: Iterable[EventAck]) -> AckSummary:
        """Delete acknowledged events: accepted, duplicate (already stored) and rejected (logged)."""
        counts = dict.fromkeys(("accepted", "duplicate", "rejected"), 0)
        unknown = 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for ack in acks:
                    cur = self._conn.execute("DELETE FROM events WHERE key = ?", (ack.key,))
                    if cur.rowcount == 0:
                        unknown += 1
                        continue
                    self._depth -= 1
                    counts[ack.status] += 1
                    if ack.status == "rejected":
                        log.warning("manager rejected event %s: %s", ack.key, ack.reason or "no reason")
                for name, value in counts.items():
                    self._bump(name, value)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return AckSummary(counts["accepted"], counts["duplicate"], counts["rejected"], unknown)

    def discard(self, keys: Iterable[str], reason: str) -> int:
        """Drop events the manager can never take (e.g. one event larger than its size limit)."""
        removed = 0
        with self._lock:
            for key in keys:
                cur = self._conn.execute("DELETE FROM events WHERE key = ?", (key,))
                removed += cur.rowcount
            self._bump("rejected", removed)
            self._depth -= removed
        if removed:
            log.warning("discarded %d event(s): %s", removed, reason)
        return removed

    # ---- introspection ---------------------------------------------------------------------------

    def depth(self) -> int:
        return self._depth

    def stats(self) -> OutboxStats:
        return read_stats(self._conn, self._lock)


def read_stats(conn: sqlite3.Connection, lock: threading.Lock | None = None) -> OutboxStats:
    """Depth, alarm count and lifetime counters (also used read-only by ``agent status``)."""
    guard = lock or threading.Lock()
    with guard:
        depth = int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        alarms = int(conn.execute("SELECT COUNT(*) FROM events WHERE alarm = 1").fetchone()[0])
        counters = {name: 0 for name in COUNTERS}
        for row in conn.execute("SELECT name, value FROM counters"):
            counters[row[0]] = int(row[1])
    return OutboxStats(depth, alarms, counters)


def parse_body(item: OutboxItem) -> dict[str, Any]:
    """The stored event as a dict (tests and diagnostics)."""
    value: dict[str, Any] = json.loads(item.body)
    return value
