"""The agent's own state: credentials, the cached policy bundle and baselines, in ``agent.db``."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hostward.agent.state.db import open_db
from hostward.wire import Account, AgentHealth, PolicyBundle

_M = TypeVar("_M", bound=BaseModel)

DB_NAME = "agent.db"
CA_NAME = "ca.pem"

_MIGRATIONS = [
    (
        1,
        [
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)",
        ],
    ),
]

K_CREDENTIALS = "credentials"
K_POLICY = "policy_bundle"
K_ACCOUNTS = "baseline.accounts"
K_HEARTBEAT = "last_heartbeat"
K_HEALTH = "last_health"


class Credentials(BaseModel):
    """What enrollment produced; the agent key authenticates every later request."""

    server_id: str
    agent_key: str
    manager_url: str
    ca_path: str
    region: str = ""
    name: str | None = None
    heartbeat_interval: int = 10
    enrolled_at: datetime


class HeartbeatRecord(BaseModel):
    """The outcome of the last heartbeat attempt, for ``hostward agent status``."""

    at: datetime
    ok: bool
    error: str = ""
    policy_version: int | None = None
    last_ok_at: datetime | None = None


class StateStore:
    """Key/value state in a private SQLite file; values are JSON, typed accessors below."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self.path = path

    @classmethod
    def open(cls, state_dir: Path, *, readonly: bool = False) -> StateStore:
        path = state_dir / DB_NAME
        return cls(open_db(path, _MIGRATIONS, readonly=readonly), path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ---- raw key/value ---------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        data = json.dumps(value, separators=(",", ":"), default=str)
        with self._lock:
            self._conn.execute(
                "INSERT INTO kv (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (key, data, time.time()),
            )

    def delete(self, key: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    def _get_model(self, key: str, model: type[_M]) -> _M | None:
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return model.model_validate(raw)
        except ValidationError:
            # A value written by an incompatible version is treated as absent rather than fatal.
            return None

    def _set_model(self, key: str, value: BaseModel) -> None:
        self.set(key, value.model_dump(mode="json"))

    # ---- typed accessors -------------------------------------------------------------------------

    def credentials(self) -> Credentials | None:
        return self._get_model(K_CREDENTIALS, Credentials)

    def save_credentials(self, creds: Credentials) -> None:
        self._set_model(K_CREDENTIALS, creds)

    def policy_bundle(self) -> PolicyBundle | None:
        return self._get_model(K_POLICY, PolicyBundle)

    def save_policy_bundle(self, bundle: PolicyBundle) -> None:
        self._set_model(K_POLICY, bundle)

    def last_accounts(self) -> list[Account] | None:
        """The accounts of the last collection (the baseline the accounts detector diffs against)."""
        raw = self.get(K_ACCOUNTS)
        if raw is None:
            return None
        try:
            return [Account.model_validate(item) for item in raw]
        except ValidationError:
            return None

    def save_last_accounts(self, accounts: list[Account]) -> None:
        self.set(K_ACCOUNTS, [a.model_dump(mode="json") for a in accounts])

    def last_heartbeat(self) -> HeartbeatRecord | None:
        return self._get_model(K_HEARTBEAT, HeartbeatRecord)

    def record_heartbeat(
        self, at: datetime, ok: bool, error: str = "", policy_version: int | None = None
    ) -> HeartbeatRecord:
        previous = self.last_heartbeat()
        last_ok = at if ok else (previous.last_ok_at if previous else None)
        if not ok and previous is not None and policy_version is None:
            policy_version = previous.policy_version
        record = HeartbeatRecord(at=at, ok=ok, error=error, policy_version=policy_version, last_ok_at=last_ok)
        self._set_model(K_HEARTBEAT, record)
        return record

    def last_health(self) -> AgentHealth | None:
        return self._get_model(K_HEALTH, AgentHealth)

    def save_health(self, health: AgentHealth) -> None:
        self._set_model(K_HEALTH, health)
