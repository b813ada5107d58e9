"""The agent as a real process (``python -m hostward.agent``) against the fake manager; the CLI functions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hostward.agent.cli import enroll_cmd, run_cmd, status_cmd
from tests.fakes.agent_manager import FakeManager, fingerprint, make_ca

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fm() -> Iterator[FakeManager]:
    with FakeManager(heartbeat_interval=1) as manager:
        yield manager


def agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "hostward.agent", *args]


def test_enroll_cmd_errors_are_one_line(
    tmp_path: Path, fm: FakeManager, capsys: pytest.CaptureFixture[str]
) -> None:
    other, _ = make_ca("other")
    assert enroll_cmd(fm.url, fm.token, fingerprint(other), tmp_path / "s") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: CA fingerprint mismatch") and err.count("\n") == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "agent.toml").write_text("nope = 1\n")
    assert enroll_cmd(fm.url, fm.token, fm.fingerprint, tmp_path / "bad") == 2
    assert "agent.toml: nope: unknown key" in capsys.readouterr().err


def test_run_and_status_cmd_before_enrollment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cmd(tmp_path / "none", []) == 2
    assert "not enrolled" in capsys.readouterr().err
    assert status_cmd(tmp_path / "none", as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["enrolled"] is False


def test_agent_process_heartbeats_stops_on_sigterm_and_reports_status(
    tmp_path: Path, fm: FakeManager
) -> None:
    state = tmp_path / "state"
    assert enroll_cmd(fm.url, fm.token, fm.fingerprint, state, "proc-agent") == 0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        agent_cmd("run", "--state-dir", str(state)), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while len(fm.heartbeats) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        assert len(fm.heartbeats) >= 2
        hb = fm.heartbeats[-1]
        assert hb.health.rss_bytes > 0 and hb.facts.machine_id
        rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
        assert rss_mb < 100, f"agent RSS {rss_mb:.1f} MB"

        out = subprocess.run(
            agent_cmd("status", "--state-dir", str(state), "--json"), env=env, capture_output=True, text=True
        )
        report = json.loads(out.stdout)
        assert out.returncode == 0 and report["running"] and report["name"] == "proc-agent"
        assert report["last_heartbeat"]["ok"] is True and report["policy_version"] == 1

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = proc.stdout.read().decode() if proc.stdout else ""
    assert "agent stopped: signal SIGTERM" in logs
    text = subprocess.run(
        agent_cmd("status", "--state-dir", str(state)), env=env, capture_output=True, text=True
    )
    assert "running:     no" in text.stdout and "server id:" in text.stdout
    assert "detector:    accounts: running" in text.stdout
