"""Ransomware prevention against a real encrypting script (AES-GCM, renaming to .locked)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.enforcers.process import ProcessKiller
from hostward.agent.enforcers.quarantine import QuarantineVault
from hostward.agent.ransomware import (
    BAIT_TOUCHED,
    ENCRYPTION_BEHAVIOUR,
    RansomwareMonitor,
    RansomwarePolicy,
    SnapshotStore,
    rotate_if_due,
)
from hostward.wire.protocol import AlarmEvent
from tests.attacks import document_tree, originals
from tests.conftest import need

pytestmark = pytest.mark.root


@pytest.fixture
def tree() -> Iterator[Path]:
    need("root")
    with document_tree(
        "hw-rw-", ("finance", "hr", "projects", "cache"), per_dir=25, seed=7, size=2000
    ) as base:
        yield base


def _wait(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s")
        time.sleep(0.01)


def test_bait_touched_kills_isolates_and_snapshot_restores(tree: Path) -> None:
    docs = tree / "docs"
    policy = RansomwarePolicy(
        protected_dirs=[str(docs)], excluded_dirs=[str(docs / "cache")], action="alarm_and_isolate"
    )
    baits, rotated = rotate_if_due(policy, str(tree / "baits.json"), time.time(), rng=random.Random(1))
    assert rotated and baits
    bait_paths = {b.path for b in baits}
    assert not any(p.startswith(str(docs / "cache")) for p in bait_paths)
    assert all(os.path.basename(p).startswith(".") for p in bait_paths)
    before = originals(docs)
    snaps = SnapshotStore(str(tree / "snapshots"), keep=3)
    snap = snaps.take(policy, skip=lambda p: p in bait_paths)
    assert snap.files == 75  # the excluded cache directory is not captured, nor are the baits
    seen: list[tuple[dict[str, Any], AlarmEvent]] = []
    vault = QuarantineVault(tree / "vault")
    monitor = RansomwareMonitor(
        policy, baits=baits, killer=ProcessKiller(), vault=vault, on_event=lambda r, a: seen.append((r, a))
    )
    monitor.start()
    script = tree / "tools" / "encrypt.py"
    try:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(docs), "0"], stdout=subprocess.PIPE, text=True
        )
        out, _ = proc.communicate(timeout=30)
    finally:
        monitor.stop()
        vault.close()
    # -9, or 0 when the killer's psutil.wait_procs reaped our own child before Popen could (ECHILD)
    assert proc.returncode in (-9, 0), (proc.returncode, out, seen)
    assert "DONE" not in out
    encrypted = list(docs.rglob("*.locked"))
    assert 0 < len(encrypted) < 100, "killed before it finished the directory"
    print(f"ransomware killed after encrypting {len(encrypted)} of 100 files")
    record, alarm = next((r, a) for r, a in seen if r["code"] == BAIT_TOUCHED)
    assert alarm.event_class == "ransomware_0001" and alarm.severity == "critical"
    assert record["path"] in bait_paths
    assert record["process"]["pid"] == proc.pid
    kill = next(r for r in record["response"] if r["action"] == "kill")
    assert kill["ok"] and proc.pid in kill["killed"]
    isolate = next(r for r in record["response"] if r["action"] == "isolate")
    assert isolate["ok"] and isolate["path"] == str(script)
    assert not script.exists()
    # the directory comes back from the snapshot; the .locked files are displaced, baits left alone
    result = snaps.restore(snap.id, keep=lambda p: p in bait_paths)
    assert originals(docs) == before
    # the excluded cache directory is neither snapshotted nor cleaned up
    protected_locked = [p for p in encrypted if "cache" not in p.parts]
    assert not [p for p in docs.rglob("*.locked") if "cache" not in p.parts]
    assert len(result.displaced) == len(protected_locked)
    # a bait the script destroyed is replanted on the next rotation check
    _, rotated = rotate_if_due(policy, str(tree / "baits.json"), time.time())
    assert rotated


def test_behaviour_rule_names_the_encrypting_process(tree: Path) -> None:
    docs = tree / "docs"
    policy = RansomwarePolicy(protected_dirs=[str(docs)], bait=False, action="alarm")
    seen: list[tuple[dict[str, Any], AlarmEvent]] = []
    monitor = RansomwareMonitor(policy, on_event=lambda r, a: seen.append((r, a)))
    monitor.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, str(tree / "tools" / "encrypt.py"), str(docs / "finance"), "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "DONE" in out
        _wait(lambda: any(r["code"] == ENCRYPTION_BEHAVIOUR for r, _ in seen), 2.0)
    finally:
        monitor.stop()
    record, alarm = next((r, a) for r, a in seen if r["code"] == ENCRYPTION_BEHAVIOUR)
    assert alarm.event_class == "ransomware_0002"
    assert record["count"] == policy.rate_files + 1
    assert record["response"] == []
    if monitor.fanotify_ok:
        assert record["process"]["pid"] == proc.pid
