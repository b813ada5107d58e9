"""In-memory state that keeps the agent channel's frequent requests off the database.

Per manager process:

- **credentials**: ``sha256(agent key) -> server id`` for keys this process has checked against the
  database, trusted for ``CREDENTIAL_TTL_S``. A revocation committed by this process forgets the key
  at commit (``forget_after_commit``); one committed by another replica is seen by the agent channel's
  once-a-second revocation check.
- **snapshots**: what the database held for a server at its last full heartbeat (host facts, health
  flag, applied policy version, status). A heartbeat that changes none of it and finds the server
  online is answered from memory, and its ``last_seen_at``/health are buffered.
- **buffered heartbeats**: written once a second in one statement by the agent channel's ticker, which
  also takes any server found no longer online (the offline sweep ran in between) through the full
  status refresh and refreshes the snapshots' policy versions.

Nothing here talks to the database; ``hostward.manager.agentlink.service`` does.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

# A credential checked against the database is trusted this long (revocations are pushed sooner).
CREDENTIAL_TTL_S = 300.0
_FORGET_KEYS = "hostward.forget_keys"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The heartbeat-relevant part of a server row, as of its last full heartbeat or flush."""

    facts: tuple[Any, ...]
    degraded: bool
    policy_version_applied: int | None
    heartbeat_interval: int
    policy_version: int
    agent_status: str


class AgentCache:
    """Thread-safe: read on the event loop, written from thread-pool workers too."""

    def __init__(self, credential_ttl_s: float = CREDENTIAL_TTL_S) -> None:
        self._lock = threading.Lock()
        self._ttl = credential_ttl_s
        self._keys: dict[str, tuple[str, float]] = {}
        self._server_keys: dict[str, set[str]] = {}
        self._snapshots: dict[str, Snapshot] = {}
        self._beats: dict[str, tuple[datetime, dict[str, Any]]] = {}
        # When the last check for revocations by other replicas ran (database clock of this process).
        self.revocations_checked_at: datetime | None = None
        # Operational counters (logged at shutdown), e.g. heartbeats answered from memory vs in full.
        self.counters: Counter[str] = Counter()

    # ---- credentials --------------------------------------------------------------------------------

    def server_for(self, key_hash: str) -> str | None:
        """The server id of a recently verified key, else None (ask the database)."""
        entry = self._keys.get(key_hash)
        if entry is None or time.monotonic() - entry[1] > self._ttl:
            return None
        return entry[0]

    def remember(self, key_hash: str, server_id: str) -> None:
        with self._lock:
            self._keys[key_hash] = (server_id, time.monotonic())
            self._server_keys.setdefault(server_id, set()).add(key_hash)

    def forget_keys(self, key_hashes: set[str] | list[str]) -> None:
        with self._lock:
            for key_hash in key_hashes:
                entry = self._keys.pop(key_hash, None)
                if entry is not None:
                    self.counters["keys_forgotten"] += 1
                    self._snapshots.pop(entry[0], None)
                    keys = self._server_keys.get(entry[0])
                    if keys is not None:
                        keys.discard(key_hash)

    def forget_server(self, server_id: str) -> None:
        with self._lock:
            for key_hash in self._server_keys.pop(server_id, set()):
                self._keys.pop(key_hash, None)
            self._snapshots.pop(server_id, None)
            self._beats.pop(server_id, None)

    def cached_keys(self) -> int:
        return len(self._keys)

    # ---- snapshots and buffered heartbeats ----------------------------------------------------------

    def snapshot(self, server_id: str) -> Snapshot | None:
        return self._snapshots.get(server_id)

    def set_snapshot(self, server_id: str, snap: Snapshot | None) -> None:
        with self._lock:
            if snap is None:
                self._snapshots.pop(server_id, None)
            elif server_id in self._server_keys:
                # Only for servers whose key is cached: a forgotten server stays forgotten.
                self._snapshots[server_id] = snap

    def refresh_snapshot(self, server_id: str, agent_status: str, policy_version: int) -> None:
        """After a flush: the status and policy version the database holds now."""
        with self._lock:
            snap = self._snapshots.get(server_id)
            if snap is None:
                return
            if agent_status != "online":
                del self._snapshots[server_id]
                self.counters["snapshots_dropped_not_online"] += 1
            elif snap.policy_version != policy_version:
                self._snapshots[server_id] = Snapshot(
                    snap.facts,
                    snap.degraded,
                    snap.policy_version_applied,
                    snap.heartbeat_interval,
                    policy_version,
                    agent_status,
                )

    def buffer_beat(self, server_id: str, at: datetime, health: dict[str, Any]) -> None:
        with self._lock:
            self._beats[server_id] = (at, health)

    def drop_beat(self, server_id: str) -> None:
        """A full (database) heartbeat was just recorded: an older buffered one must not follow it."""
        with self._lock:
            self._beats.pop(server_id, None)

    def take_beats(self) -> dict[str, tuple[datetime, dict[str, Any]]]:
        with self._lock:
            beats, self._beats = self._beats, {}
        return beats

    def buffered_beats(self) -> int:
        return len(self._beats)


def forget_after_commit(session: Session, key_hashes: list[str]) -> None:
    """Ask the unit of work to drop these credentials from the cache once the transaction commits."""
    session.info.setdefault(_FORGET_KEYS, set()).update(key_hashes)


def keys_to_forget(session: Session) -> set[str]:
    forgotten: set[str] = session.info.pop(_FORGET_KEYS, set())
    return forgotten
