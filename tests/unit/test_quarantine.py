"""Quarantine vault (isolate / restore / delete) and the process-tree killer, on real files and processes."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import hostward
from hostward.agent.enforcers.process import KillRefused, ProcessKiller
from hostward.agent.enforcers.quarantine import (
    IsolationRefused,
    QuarantineError,
    QuarantineVault,
    agent_protected_paths,
    dpkg_lock_held,
)
from hostward.agent.malware import MalwareScanner, MountTable, load_rules
from tests.conftest import need

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TEST_UID, TEST_GID = 54321, 54322


def vault(tmp_path: Path, **kw: object) -> QuarantineVault:
    kw.setdefault("package_busy", lambda: False)
    return QuarantineVault(tmp_path / "state" / "quarantine", **kw)  # type: ignore[arg-type]


def test_isolate_and_restore_keep_owner_mode_and_content(tmp_path: Path) -> None:
    need("root", "chown to another uid")
    www = tmp_path / "www"
    www.mkdir()
    target = www / "shell.php"
    target.write_bytes(EICAR)
    os.chown(target, TEST_UID, TEST_GID)
    os.chmod(target, 0o4751)  # set-uid survives: restore puts back exactly what was there
    os.utime(target, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    v = vault(tmp_path)
    entry = v.isolate(target, alarm_id="alarm-1")
    assert not target.exists()
    assert entry.uid == TEST_UID and entry.gid == TEST_GID and stat.S_IMODE(entry.mode) == 0o4751
    assert entry.status == "isolated" and entry.alarm_id == "alarm-1" and entry.size == len(EICAR)
    # neutralised: root-only vault, blob mode 0000, neither the bytes nor gzip-readable content
    assert stat.S_IMODE(os.stat(v.root).st_mode) == 0o700
    blobs = [p for p in (v.root / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1 and stat.S_IMODE(blobs[0].stat().st_mode) == 0
    raw = blobs[0].read_bytes()
    assert EICAR not in raw and b"EICAR" not in raw and not raw.startswith(b"\x1f\x8b")
    report = MalwareScanner(load_rules(), mounts=MountTable([])).scan([v.root])
    assert report.detections == []
    assert v.read_content(entry.id) == EICAR

    restored = v.restore(entry.id)
    st = os.lstat(target)
    assert restored.status == "restored" and target.read_bytes() == EICAR
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (TEST_UID, TEST_GID, 0o4751)
    assert st.st_mtime_ns == 1_600_000_000_000_000_000
    assert [p for p in (v.root / "blobs").rglob("*") if p.is_file()] == []


def test_restore_refuses_an_existing_path_unless_forced(tmp_path: Path) -> None:
    target = tmp_path / "x.sh"
    target.write_bytes(b"payload-1")
    v = vault(tmp_path)
    entry = v.isolate(target)
    target.write_bytes(b"new legitimate file")
    with pytest.raises(IsolationRefused) as err:
        v.restore(entry.id)
    assert err.value.reason == "exists" and target.read_bytes() == b"new legitimate file"
    v.restore(entry.id, force=True)
    assert target.read_bytes() == b"payload-1"


def test_delete_removes_the_content_for_good(tmp_path: Path) -> None:
    target = tmp_path / "miner"
    target.write_bytes(b"stratum payload")
    v = vault(tmp_path)
    entry = v.isolate(target)
    deleted = v.delete(entry.id)
    assert deleted.status == "deleted" and deleted.deleted_at is not None
    assert [p for p in (v.root / "blobs").rglob("*") if p.is_file()] == []
    with pytest.raises(QuarantineError):
        v.restore(entry.id)
    assert [e.status for e in v.list()] == ["deleted"]


def test_identical_content_shares_one_blob(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    v = vault(tmp_path)
    ea, eb = v.isolate(a), v.isolate(b)
    assert ea.sha256 == eb.sha256
    v.delete(ea.id)  # b still needs the blob
    v.restore(eb.id)
    assert b.read_bytes() == b"same"


def test_refusals(tmp_path: Path) -> None:
    v = vault(tmp_path, whitelist=lambda path, sha: path.endswith("allowed.bin"))
    # the agent's own code: checked with plan() (never isolate() a real agent file in a test)
    own = Path(hostward.__file__)
    with pytest.raises(IsolationRefused) as err:
        v.plan(own)
    assert err.value.reason == "agent_file" and own.exists()
    assert str(Path(hostward.__file__).resolve().parent) in agent_protected_paths()
    assert str(Path(hostward.__file__).resolve().parent) in v.protected
    state_file = tmp_path / "agent-state" / "creds.json"
    state_file.parent.mkdir()
    state_file.write_text("{}")
    guarded = vault(tmp_path, protected=[str(state_file.parent)])
    with pytest.raises(IsolationRefused) as err:
        guarded.isolate(state_file)
    assert err.value.reason == "agent_file" and state_file.exists()
    allowed = tmp_path / "allowed.bin"
    allowed.write_bytes(b"x")
    with pytest.raises(IsolationRefused) as err:
        v.isolate(allowed)
    assert err.value.reason == "whitelisted" and allowed.exists()
    link = tmp_path / "link"
    link.symlink_to(allowed)
    with pytest.raises(IsolationRefused) as err:
        v.isolate(link)
    assert err.value.reason in ("not_regular", "unreadable") and link.is_symlink()
    changed = tmp_path / "changed.bin"
    changed.write_bytes(b"now different")
    with pytest.raises(IsolationRefused) as err:
        v.isolate(changed, expected_sha256="0" * 64)
    assert err.value.reason == "changed" and changed.exists()
    with pytest.raises(IsolationRefused):
        v.isolate(v.root / "ledger.db")
    busy = vault(tmp_path, package_busy=lambda: True, package_owner=lambda path: path.endswith("pkgfile"))
    pkg = tmp_path / "pkgfile"
    pkg.write_bytes(b"x")
    with pytest.raises(IsolationRefused) as err:
        busy.isolate(pkg)
    assert err.value.reason == "package_transaction" and err.value.retryable and pkg.exists()
    other = tmp_path / "dropped.bin"
    other.write_bytes(b"x")
    assert busy.isolate(other).status == "isolated"  # not a package file: isolated even during apt


def test_dpkg_lock_detection_does_not_take_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "lock-frontend"
    lock.write_bytes(b"")
    assert not dpkg_lock_held(lock)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl,sys,time; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX);"
            " print('locked', flush=True); time.sleep(30)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert dpkg_lock_held(lock)
        # and we did not take it: it is still the holder's
        with open(lock, "r+") as fh, pytest.raises(OSError):
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        holder.kill()
        holder.wait(10)
    assert not dpkg_lock_held(lock)


# ---- process killer -----------------------------------------------------------------------------


def test_refuses_to_kill_init_self_parents_and_the_manager(tmp_path: Path) -> None:
    manager = subprocess.Popen(["sleep", "30"])
    try:
        killer = ProcessKiller(protected_pids=[manager.pid], ledger_path=tmp_path / "kills.db")
        for pid, reason in (
            (1, "init"),
            (0, "init"),
            (os.getpid(), "protected"),
            (os.getppid(), "protected"),
            (manager.pid, "protected"),
        ):
            with pytest.raises(KillRefused) as err:
                killer.kill_tree(pid)
            assert err.value.reason == reason, pid
        assert manager.poll() is None and killer.ledger() == []
    finally:
        manager.kill()
        manager.wait(10)


def test_kill_tree_kills_children_first_and_records_it(tmp_path: Path) -> None:
    root = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & (sleep 60 & wait) & wait"])
    deadline = time.monotonic() + 10
    proc = psutil.Process(root.pid)
    while len(proc.children(recursive=True)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    tree = [root.pid] + [c.pid for c in proc.children(recursive=True)]
    assert len(tree) >= 5
    killer = ProcessKiller(ledger_path=tmp_path / "kills.db")
    result = killer.kill_tree(root.pid, create_time=proc.create_time(), alarm_id="a-1")
    root.wait(10)
    assert sorted(result.killed) == sorted(tree) and result.killed[-1] == root.pid and not result.failed
    for pid in tree:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    (row,) = killer.ledger()
    assert row["root_pid"] == root.pid and row["alarm_id"] == "a-1"


def test_kill_counts_an_unreaped_zombie_as_killed(tmp_path: Path) -> None:
    # the parent never reaps its child: after SIGKILL the child stays a zombie, which is dead
    parent = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (child,) = psutil.Process(parent.pid).children()
        result = ProcessKiller(ledger_path=tmp_path / "kills.db").kill_tree(
            child.pid, create_time=child.create_time(), timeout=1.0
        )
        assert result.killed == [child.pid] and not result.failed
        assert child.status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        parent.wait(10)


def test_kill_refuses_a_reused_pid() -> None:
    p = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(KillRefused) as err:
            ProcessKiller().kill_tree(p.pid, create_time=psutil.Process(p.pid).create_time() - 100)
        assert err.value.reason == "pid_reused" and p.poll() is None
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
