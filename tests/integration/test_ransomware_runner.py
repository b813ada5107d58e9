"""Ransomware prevention wired into the agent: a real agent runtime against a fake manager over HTTPS,
a real encrypting script (``cryptography`` AES-GCM, renaming to ``.locked``), real fanotify, the real
process killer and quarantine vault, and ``ransomware_restore`` from the snapshot the agent took."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.ransomrunner import RansomRunner, desired_from
from hostward.agent.runtime import Agent
from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.wire import Command, PolicyBundle
from tests.agenthost import enrolled_config, fake_host, pump, quiet_probe
from tests.attacks import document_tree, originals
from tests.conftest import need
from tests.fakes.agent_clock import FakeClock
from tests.fakes.wtp_manager import WtpFakeManager

pytestmark = pytest.mark.root

WAIT_S = 15.0


@pytest.fixture
def tree() -> Iterator[Path]:
    need("root")
    with document_tree("hw-rwr-", ("finance", "hr", "cache"), per_dir=30, seed=11, size=1500) as base:
        yield base


def settings(docs: Path, **extra: Any) -> dict[str, Any]:
    policy = {
        "name": "documents",
        "protected_dirs": [str(docs)],
        "excluded_dirs": [str(docs / "cache")],
        "file_types": ["docx", "xlsx", "txt", "pdf"],
        "action": "alarm_and_isolate",
        "bait": True,
        "snapshot_interval_h": 24,
        "snapshot_keep": 3,
        **extra,
    }
    return {"enabled": True, "policy": policy}


def bundle(raw: dict[str, Any], edition: str = "premium", protection: bool = True) -> PolicyBundle:
    return PolicyBundle(
        version=3,
        group_id="g1",
        group_name="default",
        edition=edition,
        protection=protection,
        global_settings={"ransomware": raw},
    )


def test_gating() -> None:
    raw = settings(Path("/srv/docs"))
    assert desired_from(bundle(raw)).policy is not None
    assert desired_from(bundle(raw, edition="wtp")).policy is not None
    assert desired_from(bundle(raw, edition="enterprise")).policy is None
    assert desired_from(bundle(raw, protection=False)).policy is None
    assert desired_from(bundle({**raw, "enabled": False})).policy is None


@pytest.fixture
def fm() -> Iterator[WtpFakeManager]:
    with WtpFakeManager() as manager:
        yield manager


@pytest.fixture
def agent(tmp_path: Path, fm: WtpFakeManager) -> Iterator[Agent]:
    host = fake_host(
        tmp_path / "host",
        passwd="root:x:0:0:root:/root:/bin/bash\n",
        group="root:x:0:\n",
        machine_id="abcdefabcdefabcdefabcdefabcdef01",
        hostname="rw-host",
    )
    cfg = enrolled_config(tmp_path, fm, "rw-agent", host=host)
    a = Agent.from_config(cfg, clock=FakeClock(), probe=quiet_probe)
    try:
        yield a
    finally:
        a.shutdown()


def wait_for(agent: Agent, check: Callable[[], bool], what: str) -> None:
    pump(agent, check, what, timeout=WAIT_S, heartbeat=True)


def test_encrypting_script_is_killed_alarmed_and_the_snapshot_restores(
    tree: Path, fm: WtpFakeManager, agent: Agent
) -> None:
    docs = tree / "docs"
    before = originals(docs)
    assert agent.ransom.wtp is agent.wtp  # baits in WTP-locked trees go through web tamper protection
    fm.policy = bundle(settings(docs))
    wait_for(agent, lambda: bool(fm.records("ransomware_snapshot")), "first snapshot")
    [status] = fm.records("ransomware_status")
    assert status["state"] == "protected" and status["baits"] >= 4, status
    [snap] = fm.records("ransomware_snapshot")
    assert snap["files"] == 60 and snap["kept"] == [snap["snapshot_id"]]  # cache excluded, no baits
    baits = {b.path for b in agent.ransom.baits}
    assert baits and not any("/cache/" in p for p in baits)
    assert next(h for h in agent.health().detectors if h.name == "ransomware").status == "running"

    script = tree / "tools" / "encrypt.py"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(docs), "0.005"], stdout=subprocess.PIPE, text=True
    )
    out, _ = proc.communicate(timeout=30)
    assert "DONE" not in out and proc.returncode in (-9, 0), (proc.returncode, out)
    encrypted = [p for p in docs.rglob("*.locked") if "cache" not in p.parts]
    assert 0 < len(encrypted) < 30, f"killed before it finished the first directory ({len(encrypted)})"
    print(f"encrypting script killed after {len(encrypted)} of 60 protected files")
    wait_for(agent, lambda: bool(fm.alarms("ransomware_0001")), "bait alarm at the manager")
    alarm = fm.alarms("ransomware_0001")[0]
    assert not script.exists(), alarm["evidence"]["response"]  # isolated in the vault
    assert alarm["severity"] == "critical" and alarm["evidence"]["process"]["pid"] == proc.pid
    assert alarm["evidence"]["path"] in baits
    kill = next(r for r in alarm["evidence"]["response"] if r["action"] == "kill")
    assert kill["ok"] and proc.pid in kill["killed"]
    isolated = [r for r in fm.records("isolated_file") if r["path"] == str(script)]
    if hasattr(agent, "malware"):
        assert isolated and isolated[0]["state"] == "isolated" and isolated[0]["reason"] == "auto"

    command_id = fm.queue(agent.creds.server_id, "ransomware_restore", {"snapshot_id": snap["snapshot_id"]})
    wait_for(agent, lambda: command_id in fm.results, "restore result")
    result = fm.results[command_id]
    assert result.status == "succeeded", result.detail
    real = [p for p in encrypted if not p.name.startswith(".")]  # the rest are encrypted baits
    assert result.data["restored"] == len(real) and result.data["displaced"] == len(encrypted)
    assert originals(docs) == before
    assert not [p for p in docs.rglob("*.locked") if "cache" not in p.parts]
    unknown = fm.queue(agent.creds.server_id, "ransomware_restore", {"snapshot_id": "nope"})
    wait_for(agent, lambda: unknown in fm.results, "refusal")
    assert fm.results[unknown].status == "failed" and "not found" in fm.results[unknown].detail


def test_rotation_retention_and_turning_off(tree: Path, tmp_path: Path) -> None:
    docs = tree / "docs"
    state = tmp_path / "state"
    state.mkdir()
    outbox = Outbox.open(state)
    clock = FakeClock()
    runner = RansomRunner(state, outbox, clock)
    try:
        runner.configure(bundle(settings(docs, snapshot_keep=2, snapshot_interval_h=1)))
        runner.step()
        first = {b.path for b in runner.baits}
        assert first and all(os.path.exists(p) for p in first)
        # a bait gone (no attack: removed while nothing watched it) is replanted on the next tick
        runner.monitor.stop()  # type: ignore[union-attr]
        os.unlink(sorted(first)[0])
        runner.step()
        assert all(os.path.exists(b.path) for b in runner.baits) and runner.counters["rotations"] == 2
        for _ in range(3):
            clock.advance(3600)
            runner.step()
        assert len(runner.snapshots.list()) == 2  # type: ignore[union-attr]
        events = [parse_body(i) for i in outbox.batch(10_000, max_bytes=10**9)]
        snaps = [e["data"] for e in events if e.get("topic") == "ransomware_snapshot"]
        assert len(snaps) == 4 and len(snaps[-1]["kept"]) == 2
        # no alarm for the agent's own replanting
        assert not [e for e in events if e["kind"] == "alarm"]
        # off: baits removed, status disabled
        runner.configure(bundle(settings(docs), edition="basic"))
        runner.step()
        assert not any(os.path.exists(b) for b in first | {b.path for b in runner.baits})
        statuses = [parse_body(i)["data"] for i in outbox.batch(10_000, max_bytes=10**9)]
        assert statuses[-1]["state"] == "disabled"
        result = runner.restore_command(
            Command(id="c1", kind="ransomware_restore", payload={}, created_at=clock.now())
        )
        assert result.status == "failed"
    finally:
        runner.stop()
        outbox.close()
