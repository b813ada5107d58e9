"""Web tamper protection wired into the agent: a real agent runtime against a fake manager over HTTPS,
real files on ext4, real inotify/fanotify, the real immutable bit and the real ``hostward wtp exec``.

Also: restart with the backup reloaded (and an offline change rolled back), WTP turned off while the
agent was stopped, a full backup disk, a filesystem without the immutable flag, scheduled windows,
suspend/resume, the remote backup and ``wtp_remote_restore``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.config import AgentConfig
from hostward.agent.runtime import Agent
from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.agent.wtp.backup import load_manifest
from hostward.agent.wtp.immutable import KernelImmutability
from hostward.agent.wtprunner import WtpRunner, desired_from
from hostward.wire import PolicyBundle
from tests.agenthost import enrolled_config, fake_host, pump, quiet_probe
from tests.attacks import start_tamper
from tests.conftest import need
from tests.fakes.agent_clock import FakeClock
from tests.fakes.wtp_manager import WtpFakeManager

pytestmark = pytest.mark.root

HOSTWARD = str(Path(sys.executable).parent / "hostward")
PASSWD = "root:x:0:0:root:/root:/bin/bash\n"
WAIT_S = 10.0


def wait_until(check: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} not met within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - start


def immutable(path: Path) -> bool:
    return KernelImmutability().is_immutable(str(path))


def _unlock(path: Path) -> None:
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)


@pytest.fixture
def base() -> Iterator[Path]:
    """A scratch tree on a filesystem with the immutable flag (ext4 here; a loop image otherwise)."""
    need("root")
    root = Path(tempfile.mkdtemp(prefix="hw-wtpr-", dir="/var/tmp"))
    probe = root / "probe"
    probe.write_text("")
    mounted = False
    try:
        KernelImmutability().set_immutable(str(probe), True)
        KernelImmutability().set_immutable(str(probe), False)
    except Exception:
        image = root / "fs.img"
        subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        (root / "mnt").mkdir()
        subprocess.run(["mount", "-o", "loop", str(image), str(root / "mnt")], check=True)
        mounted = True
    top = root / "mnt" if mounted else root
    www = top / "www"
    (www / "css").mkdir(parents=True)
    (www / "logs").mkdir()
    (www / "index.html").write_text("<html>welcome</html>\n")
    (www / "css" / "site.css").write_text("body { color: black }\n")
    try:
        yield top
    finally:
        _unlock(root)
        if mounted:
            subprocess.run(["umount", str(root / "mnt")], check=False)
        shutil.rmtree(root, ignore_errors=True)


def wtp_settings(top: Path, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "enabled": True,
        "dirs": [{"path": str(top / "www"), "excluded_subdirs": ["logs"], "excluded_types": ["log"]}],
        "backup_path": str(top / "backup"),
        "privileged": ["/usr/bin/cp", "/usr/bin/false"],
        "privileged_children": False,
        "schedule": {"enabled": False, "weekdays": [1, 2, 3, 4, 5, 6, 7], "windows": []},
        "remote_backup": False,
    }
    settings.update(extra)
    return settings


def wtp_bundle(
    settings: dict[str, Any], *, edition: str = "wtp", protection: bool = True, version: int = 2
) -> PolicyBundle:
    return PolicyBundle(
        version=version,
        group_id="g1",
        group_name="default",
        edition=edition,
        protection=protection,
        global_settings={"wtp": settings},
    )


# ---- pure gating --------------------------------------------------------------------------------


def test_gating_by_edition_protection_and_switch(tmp_path: Path) -> None:
    settings = wtp_settings(tmp_path)
    assert desired_from(wtp_bundle(settings)).config is not None
    assert desired_from(wtp_bundle(settings, edition="premium")).config is None
    assert desired_from(wtp_bundle(settings, protection=False)).config is None
    assert desired_from(wtp_bundle({**settings, "enabled": False})).config is None
    empty = PolicyBundle(version=1, group_id=None, group_name=None, edition="wtp", protection=True)
    assert desired_from(empty).config is None


def test_bad_configuration_is_a_clear_status_not_a_crash(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path)
    try:
        runner = WtpRunner(tmp_path, outbox, FakeClock(), use_fanotify=False)
        bad = wtp_settings(tmp_path, backup_path=str(tmp_path / "www" / "bk"))
        runner.configure(wtp_bundle(bad))
        runner.step()
        assert runner.guard is None
        [event] = [parse_body(i) for i in outbox.batch(100, max_bytes=10**7)]
        assert event["topic"] == "wtp_status" and event["data"]["state"] == "error"
        assert "backup_path" in event["data"]["message"] and "overlaps" in event["data"]["message"]
        assert runner.health()[0].status == "degraded"
        runner.configure(wtp_bundle({**bad, "dirs": [{"path": 42}]}))  # wrong types
        assert "dirs[0]" in runner.health()[0].reason
    finally:
        outbox.close()


# ---- the agent runtime against the fake manager ---------------------------------------------------


@pytest.fixture
def fm() -> Iterator[WtpFakeManager]:
    with WtpFakeManager() as manager:
        yield manager


@pytest.fixture
def cfg(tmp_path: Path, fm: WtpFakeManager) -> AgentConfig:
    host = fake_host(
        tmp_path / "host",
        passwd=PASSWD,
        group="root:x:0:\n",
        machine_id="0123456789abcdef0123456789abcdef",
        hostname="wtp-host",
    )
    return enrolled_config(tmp_path, fm, "wtp-agent", host=host)


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.shutdown()


def start_agent(cfg: AgentConfig, agents: list[Agent]) -> Agent:
    agent = Agent.from_config(cfg, clock=FakeClock(), probe=quiet_probe)
    agents.append(agent)
    return agent


def wait_for(agent: Agent, fm: WtpFakeManager, check: Callable[[], bool], what: str) -> None:
    """Run agent passes (heartbeat, commands, WTP step, send) until ``check()`` holds."""
    pump(
        agent,
        check,
        what,
        timeout=WAIT_S,
        heartbeat=True,
        seen=lambda: f"records so far: {[e.get('topic') for e in fm.events]}",
    )


def exec_cli(state_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOSTWARD, "wtp", "exec", "--state-dir", str(state_dir), "--", *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_agent_locks_restores_and_lets_privileged_commands_through(
    base: Path, fm: WtpFakeManager, cfg: AgentConfig, agents: list[Agent]
) -> None:
    www = base / "www"
    page = www / "index.html"
    privileged = ["/usr/bin/cp", "/usr/bin/false", "/usr/bin/dash"]
    fm.policy = wtp_bundle(wtp_settings(base, privileged=privileged))
    agent = start_agent(cfg, agents)
    wait_for(agent, fm, lambda: any(r["state"] == "protected" for r in fm.records("wtp_status")), "protected")
    [status] = [r for r in fm.records("wtp_status") if r["state"] == "protected"]
    assert status["dirs"] == [{"path": str(www), "state": "protected", "files": 2}]
    assert status["backup"]["files"] == 2 and status["backup"]["built_at"]
    assert immutable(page) and immutable(www) and not immutable(www / "logs")
    assert next(h for h in agent.health().detectors if h.name == "wtp").status == "running"

    # 1. root writing the locked page is refused by the kernel
    with pytest.raises(PermissionError):
        page.write_text("defaced")
    assert page.read_text() == "<html>welcome</html>\n"

    # 2. the attribute removed and the page written: rolled back within 1 s, the writer named
    for _ in range(10):
        proc = start_tamper(page, "defaced", linger=1.0)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() == b"written":
            break
        proc.wait(5)
    else:
        pytest.fail("the tamper write never got through")
    took = wait_until(lambda: page.read_text() == "<html>welcome</html>\n", 1.0, "restore")
    assert took < 1.0
    wait_until(lambda: immutable(page), 1.0, "relock")
    wait_for(agent, fm, lambda: bool(fm.records("wtp_tamper")) and bool(fm.alarms("wtp_0001")), "tamper")
    proc.wait(5)
    [tamper] = fm.records("wtp_tamper")
    assert tamper["path"] == str(page) and tamper["action"] == "modified" and tamper["outcome"] == "restored"
    assert tamper["process"]["pid"] == proc.pid and tamper["directory"] == str(www)
    assert tamper["latency_ms"] < 1000
    [alarm] = fm.alarms("wtp_0001")
    assert alarm["evidence"]["file_path"] == str(page) and alarm["evidence"]["process"]["pid"] == proc.pid

    # 3. `hostward wtp exec -- cp ...`: the privileged program updates the page; backup refreshed
    new_page = base / "new.html"
    new_page.write_text("<html>release 2</html>\n")
    agent.wtpctl.start()
    done = exec_cli(cfg.state_dir, "cp", str(new_page), str(page))
    assert done.returncode == 0, done.stderr
    assert page.read_text() == "<html>release 2</html>\n" and immutable(page)
    manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
    assert manifest[str(page)].size == len("<html>release 2</html>\n")
    time.sleep(0.5)  # the watcher saw the privileged write: no rollback, no tamper record
    assert page.read_text() == "<html>release 2</html>\n"
    wait_for(agent, fm, lambda: len(fm.records("wtp_status")) >= 1, "status")
    assert len(fm.records("wtp_tamper")) == 1

    # a deletion by someone else right after a deploy (while the privileged program is still the
    # page's last known writer) is rolled back, not taken into the backup as that program's doing
    deploy = exec_cli(cfg.state_dir, "dash", "-c", f"echo release 3 > {page}; sleep 0.3")
    assert deploy.returncode == 0, deploy.stderr
    _unlock(www)
    page.unlink()
    wait_until(lambda: page.exists(), 1.0, "deleted page restored")
    assert page.read_text() == "release 3\n"
    assert str(page) in load_manifest(str(base / "backup" / "manifest.json"))[0]
    wait_until(lambda: immutable(page) and immutable(www), 1.0, "relock after the deletion")
    wait_for(agent, fm, lambda: len(fm.records("wtp_tamper")) == 2, "deletion tamper record")
    assert fm.records("wtp_tamper")[-1]["action"] == "deleted"

    # the command's exit status comes back; a program outside the list is refused (126)
    assert exec_cli(cfg.state_dir, "false").returncode == 1
    refused = exec_cli(cfg.state_dir, "touch", str(www / "x.html"))
    assert refused.returncode == 126 and "not a privileged process" in refused.stderr
    assert not (www / "x.html").exists() and immutable(page)

    # 4. the `wtp` scan (and every comprehensive scan) reconciles the whole tree
    scan = fm.queue(agent.creds.server_id, "scan", {"scan_id": "s-wtp", "kind": "wtp"})
    wait_for(agent, fm, lambda: scan in fm.results, "scan result")
    assert fm.results[scan].status == "succeeded", fm.results[scan].detail
    assert "web tamper protection: 2 files checked, 0 rolled back" in fm.results[scan].detail


def test_remote_backup_upload_and_remote_restore(
    base: Path, fm: WtpFakeManager, cfg: AgentConfig, agents: list[Agent]
) -> None:
    www = base / "www"
    page = www / "index.html"
    fm.policy = wtp_bundle(wtp_settings(base, remote_backup=True))
    agent = start_agent(cfg, agents)
    wait_for(agent, fm, lambda: bool(fm.manifests) and len(fm.blobs) == 2, "upload")
    assert {f["path"] for f in fm.manifests[-1]} == {str(page), str(www / "css" / "site.css")}
    # the local backup loses the page's blob and the page goes: the manager's copy brings it back
    manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
    sha = manifest[str(page)].sha256
    agent.wtp.guard.stop()  # no automatic restore: the command is what is being tested
    os.unlink(base / "backup" / "blobs" / sha[:2] / sha)
    _unlock(www)
    page.unlink()
    command_id = fm.queue(agent.creds.server_id, "wtp_remote_restore", {"path": str(page)})
    wait_for(agent, fm, lambda: command_id in fm.results, "restore result")
    result = fm.results[command_id]
    assert result.status == "succeeded", result.detail
    assert result.data == {"path": str(page), "sha256": sha, "source": "manager", "restored": True}
    assert page.read_text() == "<html>welcome</html>\n" and immutable(page)
    bad = fm.queue(agent.creds.server_id, "wtp_remote_restore", {"path": "/etc/passwd"})
    wait_for(agent, fm, lambda: bad in fm.results, "refusal")
    assert (
        fm.results[bad].status == "failed"
        and "not in the web tamper protection backup" in fm.results[bad].detail
    )


# ---- restart, off while stopped, failures -----------------------------------------------------------


class Harness:
    def __init__(self, state: Path, **kw: Any) -> None:
        self.state = state
        self.state.mkdir(exist_ok=True)
        self.outbox = Outbox.open(state)
        self.runner = WtpRunner(state, self.outbox, FakeClock(), **kw)

    def records(self, topic: str) -> list[dict[str, Any]]:
        items = self.outbox.batch(10_000, max_bytes=10**9)
        self.outbox.discard([i.key for i in items], "read")
        return [e["data"] for e in map(parse_body, items) if e.get("topic") == topic]

    def close(self) -> None:
        self.runner.stop()
        self.outbox.close()


@pytest.fixture
def harnesses() -> Iterator[list[Harness]]:
    made: list[Harness] = []
    yield made
    for h in made:
        h.close()


def test_restart_reloads_the_backup_and_rolls_back_an_offline_change(
    base: Path, harnesses: list[Harness]
) -> None:
    page = base / "www" / "index.html"
    first = Harness(base / "state")
    harnesses.append(first)
    first.runner.configure(wtp_bundle(wtp_settings(base)))
    first.runner.step()
    assert first.runner.counters["rebuilds"] == 1
    first.runner.stop()
    assert immutable(page)  # stopping the agent leaves the site locked
    # changed while the agent was down (attribute removed first)
    _unlock(page)
    page.write_text("offline deface")
    taken = json.loads((base / "backup" / "manifest.json").read_text())["taken_at"]
    second = Harness(base / "state")
    harnesses.append(second)
    second.runner.configure(wtp_bundle(wtp_settings(base)))
    second.runner.step()
    assert second.runner.counters == {**second.runner.counters, "reloads": 1, "rebuilds": 0}
    assert page.read_text() == "<html>welcome</html>\n" and immutable(page)
    assert json.loads((base / "backup" / "manifest.json").read_text())["taken_at"] == taken
    seen: list[dict[str, Any]] = []
    wait_until(lambda: bool(seen.extend(second.records("wtp_tamper")) or seen), 2.0, "offline tamper record")
    assert seen[0]["path"] == str(page) and seen[0]["outcome"] == "restored" and seen[0]["process"] is None


def test_turned_off_while_stopped_unlocks_on_start(base: Path, harnesses: list[Harness]) -> None:
    page = base / "www" / "index.html"
    h = Harness(base / "state", use_fanotify=False)
    harnesses.append(h)
    h.runner.configure(wtp_bundle(wtp_settings(base)))
    h.runner.step()
    h.runner.stop()
    assert immutable(page)
    again = Harness(base / "state", use_fanotify=False)
    harnesses.append(again)
    again.runner.configure(wtp_bundle({**wtp_settings(base), "enabled": False}))
    again.runner.step()
    assert not immutable(page) and not immutable(base / "www")
    assert again.records("wtp_status")[-1]["state"] == "disabled"
    page.write_text("editable again")  # no rollback
    assert (base / "backup" / "manifest.json").exists()  # the backup is kept


def test_full_backup_disk_and_missing_immutable_support_are_clear(
    base: Path, harnesses: list[Harness]
) -> None:
    small = base / "small"
    ram = base / "ram"
    small.mkdir()
    ram.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        (base / "www" / "big.bin").write_bytes(os.urandom(256 * 1024))
        h = Harness(base / "state", use_fanotify=False)
        harnesses.append(h)
        h.runner.configure(wtp_bundle(wtp_settings(base, backup_path=str(small / "backup"))))
        h.runner.step()
        [status] = h.records("wtp_status")
        assert status["state"] == "error" and "backup_disk_full" in status["message"]
        assert not immutable(base / "www" / "index.html")  # nothing locked without a backup
        assert h.runner.health()[0].status == "degraded"
    finally:
        subprocess.run(["umount", str(small)], check=False)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ram)], check=True)
    try:
        (ram / "index.html").write_text("ram page")
        h2 = Harness(base / "state2")
        harnesses.append(h2)
        settings = wtp_settings(base, dirs=[{"path": str(ram)}], privileged=["/usr/bin/dash"])
        h2.runner.configure(wtp_bundle(settings))
        h2.runner.step()
        status = h2.records("wtp_status")[-1]
        assert status["state"] == "protected" and "immutable not supported" in status["message"]
        assert status["dirs"][0]["state"] == "watch_only"
        (ram / "index.html").write_text("defaced")  # no lock: watch-and-restore still rolls it back
        wait_until(lambda: (ram / "index.html").read_text() == "ram page", 1.0, "restore without the flag")
        # a privileged program writing outside `wtp exec` (possible here: no lock) is taken into the backup
        guard = h2.runner.guard
        assert guard is not None
        subprocess.run(
            ["/usr/bin/dash", "-c", f"echo release 3 > {ram / 'index.html'}; sleep 0.6"], check=True
        )
        time.sleep(0.3)
        assert (ram / "index.html").read_text() == "release 3\n" and guard.adopted >= 1
        assert guard.manifest()[str(ram / "index.html")].size == len("release 3\n")
        h2.runner.stop()
    finally:
        subprocess.run(["umount", str(ram)], check=False)


def test_schedule_window_and_suspend(base: Path, harnesses: list[Harness]) -> None:
    page = base / "www" / "index.html"
    now = [datetime(2026, 11, 24, 3, 0)]  # a Tuesday, server-local time
    h = Harness(base / "state", use_fanotify=False, local_now=lambda: now[0])
    harnesses.append(h)
    window = {"enabled": True, "weekdays": [2], "windows": [{"start": "03:00", "end": "03:30"}]}
    h.runner.configure(wtp_bundle(wtp_settings(base, schedule=window)))
    h.runner.step()
    assert h.records("wtp_status")[-1]["state"] == "unprotected_window"
    assert not immutable(page)
    page.write_text("planned update")
    time.sleep(0.3)
    assert page.read_text() == "planned update"  # not rolled back inside the window
    now[0] = datetime(2026, 11, 24, 3, 31)
    h.runner.step()
    assert h.records("wtp_status")[-1]["state"] == "protected" and immutable(page)
    manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
    assert manifest[str(page)].size == len("planned update")  # the update is the new backup
    # suspend: unlocked and not restored; resume: locked again
    settings = wtp_settings(base, schedule=window)
    settings["dirs"][0]["suspended"] = True
    h.runner.configure(wtp_bundle(settings))
    h.runner.step()
    assert not immutable(page) and h.records("wtp_status")[-1]["dirs"][0]["state"] == "suspended"
    settings["dirs"][0]["suspended"] = False
    h.runner.configure(wtp_bundle(settings))
    h.runner.step()
    assert immutable(page) and h.records("wtp_status")[-1]["dirs"][0]["state"] == "protected"
    assert h.runner.counters["rebuilds"] == 1  # in place, no new guard


def test_control_socket_checks_the_peer_and_relocks_when_the_client_vanishes(
    base: Path, harnesses: list[Harness]
) -> None:
    import socket
    import stat

    from hostward.agent.wtpctl import LineChannel, WtpControl

    page = base / "www" / "index.html"
    h = Harness(base / "state", use_fanotify=False)
    harnesses.append(h)
    h.runner.configure(wtp_bundle(wtp_settings(base)))
    h.runner.step()
    assert immutable(page)

    def session(ctl: WtpControl) -> tuple[socket.socket, LineChannel]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(ctl.path))
        return sock, LineChannel(sock)

    others = WtpControl(base / "state", h.runner, allowed_uids=frozenset({4242}))
    others.start()
    try:
        sock, ch = session(others)
        answer = ch.recv()  # refused at once, before any request is read
        assert answer is not None and answer["code"] == "forbidden" and "root only" in answer["error"]
        sock.close()
    finally:
        others.stop()
    ctl = WtpControl(base / "state", h.runner)
    ctl.start()
    try:
        assert stat.S_IMODE(os.stat(ctl.path).st_mode) == 0o600
        sock, ch = session(ctl)
        sock.sendall(b"not json\n")
        assert sock.recv(100) == b""  # dropped, nothing else happens
        sock.close()
        sock, ch = session(ctl)
        ch.send({"op": "begin", "exe": "/usr/bin/cp", "argv": ["cp"]})
        assert ch.recv() == {"ok": True, "guard": True}
        assert not immutable(page)  # lifted for the session
        sock.close()  # the CLI was killed: the session ends, the lock comes back
        wait_until(lambda: immutable(page), 5.0, "relock after the client vanished")
        sock, ch = session(ctl)
        ch.send({"op": "begin", "exe": "/usr/bin/touch"})
        answer = ch.recv()
        assert answer is not None and answer["code"] == "wtp_not_privileged"
        sock.close()
        assert immutable(page)
    finally:
        ctl.stop()
    assert not ctl.path.exists()
