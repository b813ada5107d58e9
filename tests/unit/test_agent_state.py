from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hostward.agent.errors import AgentError
from hostward.agent.state import Credentials, StateStore
from hostward.agent.state.db import schema_version
from hostward.wire import Account, PolicyBundle

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def creds() -> Credentials:
    return Credentials(
        server_id="s1", agent_key="k1", manager_url="https://m:10180", ca_path="/x/ca.pem", enrolled_at=NOW
    )


def test_roundtrip_and_private_files(tmp_path: Path) -> None:
    state_dir = tmp_path / "st"
    st = StateStore.open(state_dir)
    assert st.credentials() is None and st.policy_bundle() is None and st.last_accounts() is None
    st.save_credentials(creds())
    st.save_policy_bundle(
        PolicyBundle(version=2, group_id=None, group_name=None, edition=None, protection=False)
    )
    st.save_last_accounts([Account(name="root", uid=0, gid=0)])
    st.record_heartbeat(NOW, ok=True, policy_version=2)
    rec = st.record_heartbeat(NOW, ok=False, error="down")
    assert rec.last_ok_at == NOW and rec.policy_version == 2
    st.close()

    again = StateStore.open(state_dir)
    assert again.credentials() == creds()
    bundle = again.policy_bundle()
    assert bundle is not None and bundle.version == 2
    assert [a.name for a in again.last_accounts() or []] == ["root"]
    beat = again.last_heartbeat()
    assert beat is not None and not beat.ok and beat.error == "down"
    again.close()

    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state_dir / "agent.db").st_mode) == 0o600


def test_schema_version_recorded_and_newer_refused(tmp_path: Path) -> None:
    st = StateStore.open(tmp_path)
    st.close()
    conn = sqlite3.connect(tmp_path / "agent.db")
    assert schema_version(conn) == 1
    conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.commit()
    conn.close()
    with pytest.raises(AgentError, match="newer"):
        StateStore.open(tmp_path)


def test_incompatible_value_reads_as_absent(tmp_path: Path) -> None:
    st = StateStore.open(tmp_path)
    st.set("credentials", {"server_id": "only"})
    assert st.credentials() is None
