"""Agent state on disk: credentials, policy cache and baselines in a private SQLite file."""

from hostward.agent.state.db import ensure_private_dir, open_db
from hostward.agent.state.store import CA_NAME, Credentials, HeartbeatRecord, StateStore

__all__ = ["CA_NAME", "Credentials", "HeartbeatRecord", "StateStore", "ensure_private_dir", "open_db"]
