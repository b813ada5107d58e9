"""The agent against a hand-written fake manager over real HTTPS (tests/fakes/agent_manager.py).

Enrollment with CA pinning, heartbeats with policy refresh, commands (scan, apply_policy, unknown),
the accounts detection between two collections, the outbox through a manager outage and a restart.
The end-to-end test against the real manager lives in tests/e2e.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostward.agent.budget import EXIT_RSS_CAP, Usage
from hostward.agent.config import AgentConfig, load_config
from hostward.agent.enroll import enroll
from hostward.agent.errors import AlreadyRunning, EnrollmentError, FingerprintMismatch, NotEnrolled
from hostward.agent.lockfile import acquire_lock
from hostward.agent.runtime import Agent
from hostward.agent.state import StateStore
from hostward.agent.status import agent_status
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState
from tests.agenthost import MB, fake_host, quiet_probe
from tests.fakes.agent_clock import FakeClock
from tests.fakes.agent_manager import FakeManager, fingerprint, make_ca


@pytest.fixture
def fm() -> Iterator[FakeManager]:
    with FakeManager() as manager:
        yield manager


@pytest.fixture
def host(tmp_path: Path) -> Path:
    return fake_host(tmp_path / "host")


@pytest.fixture
def cfg(tmp_path: Path, host: Path, fm: FakeManager) -> AgentConfig:
    state_dir = tmp_path / "state"
    enroll(fm.url, fm.token, fm.fingerprint, state_dir, "agent-1", root=host)
    return load_config(state_dir, {"host_root": host, "backoff_base_s": 1.0, "backoff_cap_s": 60.0})


def make_agent(cfg: AgentConfig, clock: FakeClock | None = None) -> Agent:
    return Agent.from_config(cfg, clock=clock or FakeClock(), probe=quiet_probe)


def add_user(host: Path, line: str) -> None:
    with open(host / "etc/passwd", "a") as fh:
        fh.write(line + "\n")


# ---- enrollment ---------------------------------------------------------------------------------


def test_enroll_saves_credential_and_pinned_ca(tmp_path: Path, host: Path, fm: FakeManager) -> None:
    state_dir = tmp_path / "st"
    creds = enroll(
        fm.url, fm.token, fm.fingerprint.upper().replace("SHA256:", ""), state_dir, "n1", root=host
    )
    [req] = fm.enrollments
    assert req.name == "n1" and req.facts.machine_id == "feedfacefeedfacefeedfacefeedface"
    assert req.facts.hostname == "fake-host" and req.previous_key is None
    assert creds.server_id in {s.server_id for s in fm.servers.values()}
    assert Path(creds.ca_path).read_text().strip() == fm.ca_pem.strip()
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(creds.ca_path).st_mode) == 0o600
    st = StateStore.open(state_dir)
    assert st.credentials() == creds
    st.close()


def test_fingerprint_mismatch_refuses_and_saves_nothing(tmp_path: Path, host: Path, fm: FakeManager) -> None:
    other, _ = make_ca("someone else")
    state_dir = tmp_path / "st"
    with pytest.raises(FingerprintMismatch, match="mismatch") as info:
        enroll(fm.url, fm.token, fingerprint(other), state_dir, root=host)
    assert fingerprint(other).removeprefix("sha256:") in str(info.value)
    assert not state_dir.exists()
    assert fm.enrollments == []  # the token never reached the impostor


def test_wrong_token_is_a_clear_error(tmp_path: Path, host: Path, fm: FakeManager) -> None:
    with pytest.raises(EnrollmentError, match=r"enrollment refused.*invalid_token"):
        enroll(fm.url, "wrong-token-456", fm.fingerprint, tmp_path / "st", root=host)
    assert not (tmp_path / "st" / "ca.pem").exists()


def test_reenroll_proves_the_previous_key_and_keeps_the_server(
    cfg: AgentConfig, fm: FakeManager, host: Path
) -> None:
    first = StateStore.open(cfg.state_dir).credentials()
    assert first is not None
    again = enroll(fm.url, fm.token, fm.fingerprint, cfg.state_dir, "agent-1", root=host)
    assert fm.enrollments[-1].previous_key == first.agent_key
    assert again.server_id == first.server_id and again.agent_key != first.agent_key


def test_not_enrolled(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolled):
        Agent.from_config(load_config(tmp_path / "empty"))


# ---- heartbeat, policy, commands (run_once with an injected clock) ------------------------------


def test_heartbeat_carries_facts_and_health_and_fetches_policy_on_change(
    cfg: AgentConfig, fm: FakeManager
) -> None:
    clock = FakeClock()
    agent = make_agent(cfg, clock)
    try:
        agent.run_once()
        [hb] = fm.heartbeats
        assert hb.facts.hostname == "fake-host" and hb.policy_version is None
        assert hb.health.rss_bytes == 40 * MB
        assert {d.name for d in hb.health.detectors} == {"accounts", "outbox"}
        assert fm.policy_fetches == 1 and agent.bundle is not None and agent.bundle.version == 1

        agent.run_once()  # not due yet
        assert len(fm.heartbeats) == 1
        clock.advance(10)
        agent.run_once()
        assert len(fm.heartbeats) == 2 and fm.heartbeats[-1].policy_version == 1
        assert fm.policy_fetches == 1

        fm.policy = fm.policy.model_copy(update={"version": 2, "protection": False})
        clock.advance(10)
        agent.run_once()
        assert fm.policy_fetches == 2 and agent.bundle.version == 2
        status = agent_status(cfg.state_dir)
        assert status["policy_version"] == 2 and status["protection"] is False
        assert status["last_heartbeat"]["ok"] is True
    finally:
        agent.shutdown()


def test_scan_command_reports_progress_assets_and_result(cfg: AgentConfig, fm: FakeManager) -> None:
    agent = make_agent(cfg)
    try:
        agent.run_once()
        server_id = next(iter(fm.servers.values())).server_id
        cmd = fm.queue(server_id, "scan", {"scan_id": "scan-1", "kind": "full"})
        agent.run_once()
        result = fm.results[cmd]
        assert result.status == "succeeded" and result.data["counts"]["accounts"] == 2
        progress = fm.events_of("scan_progress")
        assert progress[0]["status"] == "running" and progress[0]["progress"] == 0
        assert progress[-1]["status"] == "succeeded" and progress[-1]["progress"] == 100
        assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
        [assets] = fm.events_of("assets")
        assert assets["scan_id"] == "scan-1"
        assert {a["name"] for a in assets["snapshot"]["accounts"]} == {"root", "alice"}
        # assets arrive before the final status: the manager sees the data when the scan completes
        kinds = [e["kind"] for e in fm.events]
        assert kinds.index("assets") < len(kinds) - 1 and fm.events[-1]["status"] == "succeeded"
        assert agent.outbox.depth() == 0
    finally:
        agent.shutdown()


def test_unsupported_scan_kind_and_unknown_command(cfg: AgentConfig, fm: FakeManager) -> None:
    agent = make_agent(cfg)
    try:
        agent.run_once()
        server_id = next(iter(fm.servers.values())).server_id
        vuln = fm.queue(server_id, "scan", {"scan_id": "s2", "kind": "no_such_kind"})
        weird = fm.queue(server_id, "frobnicate", {})
        bad = fm.queue(server_id, "scan", {})
        policy = fm.queue(server_id, "apply_policy", {})
        cancel = fm.queue(server_id, "cancel_scan", {"scan_id": "nope"})
        agent.run_once()
        assert fm.results[vuln].status == "failed" and "not supported" in fm.results[vuln].detail
        assert fm.events_of("scan_progress")[-1]["status"] == "failed"
        assert (
            fm.results[weird].status == "failed"
            and fm.results[weird].detail == "unsupported command: frobnicate"
        )
        assert fm.results[bad].status == "failed"
        assert fm.results[policy].status == "succeeded" and fm.results[policy].data == {"version": 1}
        assert fm.results[cancel].status == "succeeded"
    finally:
        agent.shutdown()


def test_new_account_and_uid0_between_two_collections(cfg: AgentConfig, fm: FakeManager, host: Path) -> None:
    agent = make_agent(cfg)
    try:
        agent.run_once()
        server_id = next(iter(fm.servers.values())).server_id
        fm.queue(server_id, "scan", {"scan_id": "a", "kind": "asset"})
        agent.run_once()
        assert fm.events_of("alarm") == []  # the first collection is the baseline

        add_user(host, "bob:x:1001:1001::/home/bob:/bin/bash")
        add_user(host, "toor:x:0:0::/root:/bin/bash")
        fm.queue(server_id, "scan", {"scan_id": "b", "kind": "asset"})
        agent.run_once()
        alarms = {(a["event_class"], a["evidence"]["username"]) for a in fm.events_of("alarm")}
        assert alarms == {("user_1001", "bob"), ("user_1001", "toor"), ("user_1002", "toor")}
        unsafe = next(a for a in fm.events_of("alarm") if a["event_class"] == "user_1002")
        AlarmEvent.model_validate(unsafe)
        assert unsafe["severity"] == "high"
        assert "2 detection" not in fm.events_of("scan_progress")[-1]["detail"]
        assert "3 detection(s)" in fm.events_of("scan_progress")[-1]["detail"]
    finally:
        agent.shutdown()


def test_accounts_timer_uses_policy_interval_and_baseline_survives_restart(
    cfg: AgentConfig, fm: FakeManager, host: Path
) -> None:
    fm.policy = fm.policy.model_copy(
        update={
            "policies": {"asset_discovery": PolicyState(enabled=True, settings={"accounts_interval_s": 120})}
        }
    )
    clock = FakeClock()
    agent = make_agent(cfg, clock)
    agent.run_once()  # heartbeat + policy; the timer fires at most 120 s from now
    clock.advance(121)
    agent.run_once()  # baseline
    assert fm.events_of("alarm") == []
    agent.shutdown()

    add_user(host, "mallory:x:1002:1002::/home/mallory:/bin/sh")
    clock2 = FakeClock()
    agent = make_agent(cfg, clock2)
    try:
        agent.run_once()
        assert fm.events_of("alarm") == []
        clock2.advance(61)  # the first check comes a minute after start, whatever the interval
        agent.run_once()
        [alarm] = fm.events_of("alarm")
        assert alarm["evidence"]["username"] == "mallory" and alarm["evidence"]["change"] == "added"
    finally:
        agent.shutdown()


def test_protection_off_learns_without_alarming(cfg: AgentConfig, fm: FakeManager, host: Path) -> None:
    fm.policy = PolicyBundle(version=5, group_id=None, group_name=None, edition=None, protection=False)
    agent = make_agent(cfg)
    try:
        agent.run_once()
        server_id = next(iter(fm.servers.values())).server_id
        fm.queue(server_id, "scan", {"scan_id": "a", "kind": "full"})
        agent.run_once()
        add_user(host, "bob:x:1001:1001::/home/bob:/bin/bash")
        fm.queue(server_id, "scan", {"scan_id": "b", "kind": "full"})
        agent.run_once()
        assert fm.events_of("alarm") == []
        health = {d.name: d for d in agent.health().detectors}
        assert health["accounts"].status == "disabled" and health["accounts"].counters["suppressed"] == 1
    finally:
        agent.shutdown()


# ---- outbox through outages and restarts --------------------------------------------------------


def test_manager_down_for_an_hour_loses_nothing(cfg: AgentConfig, fm: FakeManager, host: Path) -> None:
    clock = FakeClock()
    agent = make_agent(cfg, clock)
    try:
        agent.run_once()
        agent.accounts_step(clock.monotonic())  # baseline
        fm.down = True
        produced = 0
        attempts_before = fm.event_posts
        for minute in range(60):
            add_user(host, f"u{minute}:x:{2000 + minute}:100::/home/u{minute}:/bin/sh")
            produced += len(agent.accounts_step(clock.monotonic()))
            for _ in range(6):
                clock.advance(10)
                agent.run_once()
        assert produced == 60 and agent.outbox.depth() == 60
        assert fm.event_posts == attempts_before  # down: the fake counted no accepted post
        # backoff: far fewer send attempts than run_once passes (360). With full jitter under a 60 s cap
        # the mean gap is ~30 s, so about 120 attempts are expected; 180 leaves room for the jitter.
        assert agent._send_backoff.attempt < 180
        status = agent_status(cfg.state_dir)
        assert status["last_heartbeat"]["ok"] is False and "503" in status["last_heartbeat"]["error"]

        fm.down = False
        clock.advance(61)
        agent.run_once()
        users = sorted(a["evidence"]["username"] for a in fm.events_of("alarm"))
        assert users == sorted(f"u{m}" for m in range(60))
        assert agent.outbox.depth() == 0
    finally:
        agent.shutdown()


def test_restart_keeps_identity_and_resends_without_duplicates(
    cfg: AgentConfig, fm: FakeManager, host: Path
) -> None:
    agent = make_agent(cfg)
    agent.run_once()
    agent.accounts_step(0)
    fm.down = True
    add_user(host, "bob:x:1001:1001::/home/bob:/bin/bash")
    [event] = agent.accounts_step(0)
    server_before = agent.creds.server_id
    agent.shutdown()
    agent.shutdown()  # idempotent

    # The manager stored the event but the ack was lost: the resend must be acknowledged as duplicate.
    fm.seen_keys.add(event.key)
    fm.down = False
    agent = make_agent(cfg)
    try:
        assert agent.creds.server_id == server_before and agent.outbox.depth() == 1
        agent.run_once()
        assert agent.outbox.depth() == 0 and fm.duplicates == 1
        assert fm.events_of("alarm") == []  # not stored twice
        assert agent.outbox.stats().counters["duplicate"] == 1
    finally:
        agent.shutdown()


def test_rejected_and_oversized_events_do_not_block_the_outbox(cfg: AgentConfig, fm: FakeManager) -> None:
    agent = make_agent(cfg)
    try:
        keys = agent.outbox.put_many(
            [
                {"kind": "record", "occurred_at": "2025-01-01T00:00:00Z", "topic": "t", "data": {"i": i}}
                for i in range(4)
            ]
        )
        big = agent.outbox.put(
            {"kind": "record", "occurred_at": "2025-01-01T00:00:00Z", "topic": "t", "data": {"x": "y" * 5000}}
        )
        fm.reject.add(keys[1])
        fm.max_body = 2000
        agent.run_once()
        agent.run_once()
        assert agent.outbox.depth() == 0
        stored = {e["key"] for e in fm.events}
        assert stored == {keys[0], keys[2], keys[3]} and big not in stored
        assert agent.outbox.stats().counters["rejected"] == 2
    finally:
        agent.shutdown()


def test_revoked_credential_is_visible_in_status(cfg: AgentConfig, fm: FakeManager) -> None:
    fm.revoked = True
    agent = make_agent(cfg)
    try:
        agent.run_once()
    finally:
        agent.shutdown()
    status = agent_status(cfg.state_dir)
    assert status["enrolled"] and not status["running"]
    assert status["last_heartbeat"]["ok"] is False and "401" in status["last_heartbeat"]["error"]


# ---- the threaded daemon ------------------------------------------------------------------------


def test_running_agent_gets_a_command_within_two_seconds_and_stops_cleanly(
    cfg: AgentConfig, fm: FakeManager
) -> None:
    agent = Agent.from_config(cfg, probe=quiet_probe)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(agent.run()))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not fm.heartbeats and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fm.heartbeats, "no heartbeat"
        assert agent_status(cfg.state_dir)["running"] is True
        with pytest.raises(AlreadyRunning):
            acquire_lock(cfg.state_dir)
        time.sleep(0.3)  # let the long poll settle into its wait
        server_id = next(iter(fm.servers.values())).server_id
        cmd = fm.queue(server_id, "scan", {"scan_id": "live", "kind": "full"})
        deadline = time.monotonic() + 20
        while cmd not in fm.results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fm.delivered[cmd] - fm.queued[cmd] < 2.0
        assert fm.results[cmd].status == "succeeded"
        deadline = time.monotonic() + 10
        while not (
            fm.events_of("scan_progress") and fm.events_of("scan_progress")[-1]["status"] == "succeeded"
        ):
            assert time.monotonic() < deadline, "scan events not delivered"
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        agent.request_stop("test")
        thread.join(30)
    assert not thread.is_alive() and codes == [0]
    assert time.monotonic() - started < 5
    assert agent_status(cfg.state_dir)["running"] is False


def test_memory_cap_exits_with_the_restart_code(cfg: AgentConfig) -> None:
    agent = Agent.from_config(cfg, probe=lambda: Usage(0.0, 10_000 * MB))
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(agent.run()))
    thread.start()
    thread.join(30)
    assert codes == [EXIT_RSS_CAP] and "memory" in agent.stop_reason


def test_status_json_shape(cfg: AgentConfig) -> None:
    report = agent_status(cfg.state_dir)
    json.dumps(report)
    assert report["enrolled"] and report["name"] == "agent-1" and report["outbox"]["depth"] == 0
    assert report["manager_url"].startswith("https://127.0.0.1:")
