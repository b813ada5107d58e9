"""The agent channel's in-memory hot path over real HTTPS: heartbeats answered from memory and written
once a second, idle polls held without a query, revocations and commands from another replica.

Runs on SQLite and (where available) PostgreSQL, with the fixtures of ``test_agentlink``.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from hostward.core.errors import ConfigError
from hostward.manager.agentlink import pki
from hostward.manager.agentlink import service as agentlink
from hostward.manager.agentlink.models import AgentCredential
from hostward.manager.context import ManagerContext
from hostward.manager.serve import AGENT_WORKERS_ENV, agent_worker_count
from hostward.manager.servers.models import Server
from hostward.manager.settings import CONFIG_NAME, ManagerSettings, load_settings
from tests.conftest import free_port
from tests.integration.test_agentlink import (  # noqa: F401  (fixtures)
    Channel,
    _enroll,
    _error,
    _facts,
    _poll_in_thread,
    _token,
    _wait_until_polling,
    channel,
    mctx,
)


def _server(ctx: ManagerContext, server_id: str) -> Server:
    with ctx.uow() as s:
        server = s.get(Server, server_id)
        assert server is not None
        return server


def _wait(what: str, check: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_plain_heartbeats_are_answered_from_memory_and_written_within_a_tick(channel: Channel) -> None:  # noqa: F811 (fixture)
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    with channel.client(enrolled["agent_key"]) as c:
        # First contact: the full path (and the snapshot the next ones are compared with).
        assert c.post("/heartbeat", json={"facts": _facts(), "health": {"rss_bytes": 1}}).status_code == 200
        full = ctx.agents.counters["heartbeats_full"]
        before = _server(ctx, sid).last_seen_at
        assert before is not None
        time.sleep(0.05)
        r = c.post("/heartbeat", json={"facts": _facts(), "health": {"rss_bytes": 2}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (
            body["commands_pending"] is False
            and body["heartbeat_interval"] == ctx.settings.heartbeat_interval
        )
        assert ctx.agents.counters["heartbeats_full"] == full  # answered from memory
        # Written by the once-a-second tick.
        _wait("the buffered heartbeat", lambda: _server(ctx, sid).health.get("rss_bytes") == 2, 5)
        after = _server(ctx, sid).last_seen_at
        assert after is not None and after > before

        # A changed fact goes the full way and is visible at once.
        assert c.post("/heartbeat", json={"facts": _facts(kernel="6.9.9")}).status_code == 200
        assert ctx.agents.counters["heartbeats_full"] == full + 1
        assert _server(ctx, sid).kernel == "6.9.9"

        # Bad bodies still get the routes' envelopes, not a fast-lane answer.
        _error(c.post("/heartbeat", json={"facts": {"hostname": "x"}}), 422)


def test_server_marked_offline_comes_back_with_the_next_plain_heartbeat(channel: Channel) -> None:  # noqa: F811 (fixture)
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    with channel.client(enrolled["agent_key"]) as c:
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
        later = ctx.clock.now() + timedelta(seconds=ctx.settings.offline_after_s + 1)
        with ctx.uow() as s:
            assert agentlink.sweep_agent_status(s, later, ctx.settings) == 1
        assert _server(ctx, sid).agent_status == "offline"
        # The snapshot still says online: answered from memory, then the tick restores the status.
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
        _wait("the server back online", lambda: _server(ctx, sid).agent_status == "online", 5)
        # From then on the full path runs once (the snapshot was dropped), then memory again.
        full = ctx.agents.counters["heartbeats_full"]
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
        assert ctx.agents.counters["heartbeats_full"] <= full + 1


def test_revocation_by_another_replica_reaches_a_cached_key_within_two_seconds(channel: Channel) -> None:  # noqa: F811 (fixture)
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    with channel.client(enrolled["agent_key"]) as c:
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200
        assert c.post("/heartbeat", json={"facts": _facts()}).status_code == 200  # from memory
        other = ManagerContext.from_settings(ctx.settings)
        try:
            with other.uow() as s:
                cred = s.scalar(select(AgentCredential).where(AgentCredential.server_id == sid))
                assert cred is not None
                agentlink.revoke_credential(s, sid, cred.id, now=other.clock.now(), actor="test")
        finally:
            other.close()
        revoked = time.monotonic()
        _wait(
            "401 for the revoked key",
            lambda: c.post("/heartbeat", json={"facts": _facts()}).status_code == 401,
            5,
        )
        assert time.monotonic() - revoked < 2.5
        _error(c.get("/commands", params={"wait": 1}), 401)


def test_idle_poll_gets_a_command_from_another_replica_within_2s(channel: Channel) -> None:  # noqa: F811 (fixture)
    ctx = channel.ctx
    enrolled = _enroll(channel, _token(ctx))
    sid = enrolled["server_id"]
    with channel.client(enrolled["agent_key"]) as c:
        # Finds nothing: the server is idle, its next poll waits without a query.
        assert c.get("/commands", params={"wait": 0.2}).json() == {"commands": []}
    assert ctx.wakeups.is_idle(sid)
    polls = ctx.agents.counters["polls_from_memory"]
    thread, out = _poll_in_thread(channel, enrolled["agent_key"], wait=20)
    _wait_until_polling(ctx, sid)
    assert ctx.agents.counters["polls_from_memory"] == polls + 1
    other = ManagerContext.from_settings(ctx.settings)
    try:
        with other.uow() as s:
            queued = agentlink.queue_command(s, sid, "scan", {"kind": "full"}, other.clock.now())
        committed = time.monotonic()
    finally:
        other.close()
    thread.join(10)
    assert [cmd["id"] for cmd in out["response"].json()["commands"]] == [queued.id]
    assert out["at"] - committed < 2.0
    # Queued (by another replica) while no poll was open: the next poll still gets it at once.
    other = ManagerContext.from_settings(ctx.settings)
    try:
        with other.uow() as s:
            again = agentlink.queue_command(s, sid, "scan", {"kind": "quick"}, other.clock.now())
    finally:
        other.close()
    time.sleep(1.5)  # a tick sees it and takes the server out of idle
    with channel.client(enrolled["agent_key"]) as c:
        started = time.monotonic()
        r = c.get("/commands", params={"wait": 20})
        assert [cmd["id"] for cmd in r.json()["commands"]] == [again.id]
        assert time.monotonic() - started < 1.0


# ---- several agent-channel processes ---------------------------------------------------------------


def test_agent_worker_count_needs_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sqlite = ManagerSettings(data_dir=tmp_path)
    monkeypatch.delenv(AGENT_WORKERS_ENV, raising=False)
    assert agent_worker_count(sqlite) == 1
    monkeypatch.setenv(AGENT_WORKERS_ENV, "2")
    with pytest.raises(ConfigError) as err:
        agent_worker_count(sqlite)
    assert err.value.key == AGENT_WORKERS_ENV and "PostgreSQL" in err.value.reason
    pg = ManagerSettings(data_dir=tmp_path, database_url="postgresql://u@127.0.0.1/db")
    assert agent_worker_count(pg) == 2
    for bad in ("0", "two", "-1", "65"):
        monkeypatch.setenv(AGENT_WORKERS_ENV, bad)
        with pytest.raises(ConfigError):
            agent_worker_count(pg)


def test_agent_workers_from_manager_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AGENT_WORKERS_ENV, raising=False)
    (tmp_path / CONFIG_NAME).write_text('agent_workers = 3\ndatabase_url = "postgresql://u@127.0.0.1/db"\n')
    assert agent_worker_count(load_settings(tmp_path)) == 3
    assert agent_worker_count(load_settings(tmp_path, agent_workers=2)) == 2
    monkeypatch.setenv(AGENT_WORKERS_ENV, "4")
    assert agent_worker_count(load_settings(tmp_path)) == 4
    monkeypatch.delenv(AGENT_WORKERS_ENV)
    (tmp_path / CONFIG_NAME).write_text("agent_workers = 2\n")
    with pytest.raises(ConfigError) as err:
        agent_worker_count(load_settings(tmp_path))
    assert err.value.key == "agent_workers" and "PostgreSQL" in err.value.reason
    (tmp_path / CONFIG_NAME).write_text("agent_workers = 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path)
    assert err.value.key == "agent_workers"


_RUN_PG = (
    "import sys, logging; from pathlib import Path;"
    "from hostward.manager.settings import ManagerSettings; from hostward.manager.serve import serve;"
    "logging.basicConfig(level=logging.INFO);"
    "serve(ManagerSettings(data_dir=Path(sys.argv[1]), database_url=sys.argv[2], listen=sys.argv[3],"
    " agent_listen=sys.argv[4], plain_http=True))"
)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_agent_channel_processes_share_the_port_and_stop_together(tmp_path: Path, pg_url: str) -> None:
    settings = ManagerSettings(data_dir=tmp_path / "m", database_url=pg_url)
    settings.data_dir.mkdir()
    pki.ensure_pki(settings)
    api_port, agent_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RUN_PG,
            str(settings.data_dir),
            pg_url,
            f"127.0.0.1:{api_port}",
            f"127.0.0.1:{agent_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, AGENT_WORKERS_ENV: "2"},
    )
    tls = ssl.create_default_context(cafile=str(settings.ca_cert_path))
    try:
        manager = psutil.Process(proc.pid)

        def listeners() -> list[int]:
            found = []
            for p in [manager, *manager.children(recursive=True)]:
                try:
                    conns = p.net_connections(kind="tcp")
                except psutil.Error:
                    continue
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == agent_port for c in conns):
                    found.append(p.pid)
            return found

        pids = _wait(
            "two processes listening on the agent port", lambda: len(listeners()) == 2 and listeners(), 60
        )
        assert proc.pid in pids
        # Both answer: many fresh connections are spread over the two sockets by the kernel.
        with httpx.Client(verify=tls, timeout=5) as client:
            for _ in range(20):
                assert client.get(f"https://127.0.0.1:{agent_port}/agent/v1/ca").status_code == 200
        children = manager.children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, output
        assert "Traceback" not in output, output
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"agent-channel processes left running: {alive}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
