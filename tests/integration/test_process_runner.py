"""Process threats in a real agent runtime (real proc connector, real processes, fake manager over real
HTTPS): a real reverse shell detected within a second and killed by policy, a high-risk command and a
whitelisted one, ``chmod u+s`` on a copied binary seen through the file watcher and the periodic
collection, a malicious executable run by a process isolated with its process killed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.runtime import Agent
from hostward.core.clock import SystemClock
from hostward.wire import PolicyBundle, PolicyState
from tests.agenthost import enrolled_config, quiet_probe
from tests.attacks import reverse_shell
from tests.conftest import need
from tests.fakes.agent_manager import FakeManager

pytestmark = pytest.mark.slow
WAIT_S = 15.0


def policy(auto: bool = False, **policies: dict[str, Any]) -> PolicyBundle:
    return PolicyBundle(
        version=int(time.monotonic() * 1000),
        group_id="g1",
        group_name="default",
        edition="premium",
        protection=True,
        policies={k: PolicyState(enabled=True, settings=v) for k, v in policies.items()},
        global_settings={"malware": {"auto_isolate_kill": auto}},
    )


@pytest.fixture
def fm() -> Iterator[FakeManager]:
    with FakeManager() as manager:
        yield manager


@pytest.fixture
def agent(tmp_path: Path, fm: FakeManager) -> Iterator[Agent]:
    need("root", "the proc connector and other processes' /proc entries")
    a = Agent.from_config(enrolled_config(tmp_path, fm), clock=SystemClock(), probe=quiet_probe)
    try:
        yield a
    finally:
        a.shutdown()


def wait_alarm(
    agent: Agent, fm: FakeManager, code: str, match: dict[str, Any], timeout: float = WAIT_S
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent.run_once()
        for alarm in fm.events_of("alarm"):
            ev = alarm["evidence"]
            if alarm["event_class"] == code and all(
                (v in str(ev.get(k, ""))) if isinstance(v, str) else ev.get(k) == v for k, v in match.items()
            ):
                return alarm
        time.sleep(0.05)
    return None


def start(agent: Agent, fm: FakeManager, bundle: PolicyBundle) -> None:
    fm.policy = bundle
    agent.run_once()
    collector = agent.malware.procs.collector
    assert collector is not None and collector.ready.wait(WAIT_S)
    assert collector.active_mode == "connector", collector.health()


def test_reverse_shell_detected_within_a_second_and_killed(agent: Agent, fm: FakeManager) -> None:
    start(agent, fm, policy(reverse_shell={"auto_kill": True}))
    with reverse_shell(timeout=WAIT_S) as rs:
        alarm = wait_alarm(agent, fm, "malware_0002", {"pid": rs.shell.pid})
        assert alarm is not None, agent.malware.procs.collector and agent.malware.procs.collector.stats
        latency = datetime.fromisoformat(alarm["occurred_at"]).timestamp() - rs.started
        assert latency < 1.0, f"alarm {latency:.3f} s after the exec"
        ev = alarm["evidence"]
        assert ev["remote_address"] == f"127.0.0.1:{rs.port}" and ev["auto_kill"] is True
        assert rs.shell.pid in ev["killed_pids"] and "kill_error" not in ev
        rs.shell.wait(WAIT_S)
        rs.wait_hung_up(WAIT_S)
        names = {d.name: d for d in agent.health().detectors}
        assert names["process_events"].status == "running"
        assert "exited_before_enrichment" in names["process_events"].counters
        assert (
            names["reverse_shell"].counters["alarms"] >= 1 and names["process_threats"].counters["kills"] >= 1
        )


def test_python_socket_shell_detected_within_a_second_and_killed(agent: Agent, fm: FakeManager) -> None:
    start(agent, fm, policy(reverse_shell={"auto_kill": True}))
    with reverse_shell(python=True, timeout=WAIT_S) as rs:
        alarm = wait_alarm(agent, fm, "malware_0002", {"remote_address": f"127.0.0.1:{rs.port}"})
        assert alarm is not None
        latency = datetime.fromisoformat(alarm["occurred_at"]).timestamp() - rs.started
        assert latency < 1.0, f"alarm {latency:.3f} s after the start"
        ev = alarm["evidence"]
        assert rs.shell.pid in (ev["pid"], ev["ppid"])  # the interpreter or the shell it started
        assert ev["pid"] in ev["killed_pids"] and "kill_error" not in ev
        rs.wait_hung_up(WAIT_S)


def test_reverse_shell_left_running_without_auto_kill(agent: Agent, fm: FakeManager) -> None:
    start(agent, fm, policy(reverse_shell={}))  # auto_kill defaults to off
    with reverse_shell(timeout=WAIT_S) as rs:
        alarm = wait_alarm(agent, fm, "malware_0002", {"pid": rs.shell.pid})
        assert alarm is not None and alarm["evidence"]["auto_kill"] is False
        assert "killed_pids" not in alarm["evidence"]
        time.sleep(0.5)
        assert rs.shell.poll() is None  # still running: the operator decides


def test_high_risk_command_and_whitelisted_one(agent: Agent, fm: FakeManager) -> None:
    wl = [{"process_path": "python", "cmdline_regex": "hw-allowed-marker"}]  # the contract's key
    start(agent, fm, policy(high_risk_command={"whitelist": wl}))
    code = "import time; time.sleep(2)"
    risky = subprocess.Popen([sys.executable, "-c", code, "hw-risky-marker", "nc -e /bin/sh 127.0.0.1 9"])
    allowed = subprocess.Popen([sys.executable, "-c", code, "hw-allowed-marker", "nc -e /bin/sh 127.0.0.1 9"])
    try:
        alarm = wait_alarm(agent, fm, "procreport_0001", {"process_cmdline": "hw-risky-marker"})
        assert alarm is not None and alarm["evidence"]["pid"] == risky.pid
        assert alarm["evidence"]["patterns"] == ["netcat-exec"]
        assert wait_alarm(agent, fm, "procreport_0001", {"process_cmdline": "hw-allowed-marker"}, 2.5) is None
        assert next(d for d in agent.health().detectors if d.name == "high_risk_command").counters[
            "whitelisted"
        ]
    finally:
        for p in (risky, allowed):
            p.kill()
            p.wait(WAIT_S)


def test_chmod_u_plus_s_on_copied_binaries(agent: Agent, fm: FakeManager) -> None:
    # the set-id directories are host paths, looked at under the agent's host root
    watched, other = agent.cfg.host_root / "srv" / "watched", agent.cfg.host_root / "srv" / "other"
    watched.mkdir(parents=True)
    other.mkdir()
    fim = {"important_files": False, "directories": [{"path": str(watched)}]}
    setid = {"dirs": ["/srv/watched", "/srv/other"]}
    start(agent, fm, policy(file_protection=fim, file_privilege_escalation=setid, reverse_shell={}))
    assert agent.fim.enabled
    for d in (watched, other):
        shutil.copy2("/bin/true", d / "true")
    agent.run_once()
    # the file watcher's change reaches the set-id check at once
    os.chmod(watched / "true", os.stat(watched / "true").st_mode | stat.S_ISUID)
    alarm = wait_alarm(agent, fm, "fileprotect_0001", {"file_path": str(watched / "true")})
    assert alarm is not None and alarm["evidence"]["setid"] == "setuid" and alarm["evidence"]["file_hash"]
    # outside the watched tree: the periodic collection finds it
    os.chmod(other / "true", os.stat(other / "true").st_mode | stat.S_ISGID)
    agent.malware.procs.tick(time.monotonic(), force=True)
    alarm = wait_alarm(agent, fm, "fileprotect_0001", {"file_path": str(other / "true")})
    assert alarm is not None and alarm["evidence"]["setid"] == "setgid"
    assert len([a for a in fm.events_of("alarm") if a["event_class"] == "fileprotect_0001"]) == 2


def test_malicious_executable_isolated_and_its_process_killed(
    agent: Agent,
    fm: FakeManager,
    tmp_path: Path,
) -> None:
    # a copy of sleep with a miner's stratum strings appended: still runs, and matches the miner rule
    binary = tmp_path / "miner"
    binary.write_bytes(
        Path("/bin/sleep").read_bytes() + b"\0mining.subscribe\0mining.authorize\0XMRig/6.21\0"
    )
    os.chmod(binary, 0o755)
    start(agent, fm, policy(malware_detection={"realtime_exec": True}, auto=True))
    proc = subprocess.Popen([str(binary), "30"])
    try:
        alarm = wait_alarm(agent, fm, "network_1001", {"file_path": str(binary)})
        assert alarm is not None, agent.malware.counters
        ev = alarm["evidence"]
        assert ev["source"] == "exec" and ev["pid"] == proc.pid and ev["isolated"] is True
        assert proc.pid in ev["killed_pids"] and ev["process_tree"][0]["pid"] == proc.pid
        proc.wait(WAIT_S)  # (psutil may already have reaped our child: Popen then reports 0)
        assert not os.path.exists(f"/proc/{proc.pid}") and not binary.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT_S)


def test_executables_of_processes_running_at_start_are_scanned(
    agent: Agent, fm: FakeManager, tmp_path: Path
) -> None:
    binary = tmp_path / "early-miner"
    binary.write_bytes(
        Path("/bin/sleep").read_bytes() + b"\0mining.subscribe\0mining.authorize\0XMRig/6.21\0"
    )
    os.chmod(binary, 0o755)
    proc = subprocess.Popen([str(binary), "30"])  # before process events are collected at all
    try:
        assert agent.malware.procs.collector is None
        start(agent, fm, policy(malware_detection={"realtime_exec": True}))
        alarm = wait_alarm(agent, fm, "network_1001", {"file_path": str(binary)})
        assert alarm is not None, agent.malware.counters
        ev = alarm["evidence"]
        assert ev["source"] == "exec" and ev["pid"] == proc.pid and ev["isolated"] is False
        assert proc.poll() is None and binary.exists()  # the switch is off: reported only
    finally:
        proc.kill()
        proc.wait(WAIT_S)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    # under /var/tmp: an odd place for a shell, and enterable by an unprivileged user (tmp_path is not)
    d = Path(tempfile.mkdtemp(prefix="hw-procrunner-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_privilege_escalation_and_a_copied_shell(agent: Agent, fm: FakeManager, world_dir: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    helper = world_dir / "helper"
    shutil.copy2("/bin/sleep", helper)
    os.chmod(helper, 0o4755)  # a set-uid root copy: not a sanctioned program
    start(agent, fm, policy(process_privilege_escalation={}, abnormal_shell={}))
    user_shell = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", f"{helper} 2; true"]
    )
    try:
        alarm = wait_alarm(agent, fm, "procdet_0002", {"process_path": str(helper)})
        assert alarm is not None
        assert alarm["evidence"]["ruid"] == 65534 and alarm["evidence"]["euid"] == 0
    finally:
        user_shell.kill()
        user_shell.wait(WAIT_S)
    # the shells and the odd places are looked at under the agent's host root
    host = agent.cfg.host_root
    (host / "usr" / "bin").mkdir(parents=True)
    (host / "var" / "tmp").mkdir(parents=True)
    shutil.copy2(os.path.realpath("/bin/bash"), host / "usr" / "bin" / "bash")
    shutil.copy2(host / "usr" / "bin" / "bash", host / "var" / "tmp" / ".b")
    shutil.copy2(os.path.realpath("/bin/bash"), world_dir / ".b")  # outside the host root: not looked at
    agent.malware.procs.tick(time.monotonic(), force=True)
    alarm = wait_alarm(agent, fm, "malware_0001", {"file_path": str(host / "var" / "tmp" / ".b")})
    assert alarm is not None and alarm["evidence"]["change"] == "copy"
    assert alarm["evidence"]["shell"] == str(host / "usr" / "bin" / "bash")
    shell_alarms = [a for a in fm.events_of("alarm") if a["event_class"] == "malware_0001"]
    assert [a["evidence"]["file_path"] for a in shell_alarms] == [str(host / "var" / "tmp" / ".b")]
