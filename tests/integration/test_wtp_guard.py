"""Web tamper protection against real files on ext4, real inotify/fanotify and the real immutable bit."""

from __future__ import annotations

import errno
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.fim.fanotify import Fanotify
from hostward.agent.wtp import (
    NO_IMMUTABLE,
    NotPrivileged,
    ProtectedDir,
    Schedule,
    Window,
    WtpConfig,
    WtpGuard,
    run_privileged,
)
from hostward.agent.wtp.backup import load_manifest
from hostward.agent.wtp.immutable import ImmutableUnsupported, KernelImmutability
from hostward.wire.protocol import AlarmEvent
from tests.attacks import start_tamper
from tests.conftest import need

pytestmark = pytest.mark.root


def _unlock(path: Path) -> None:
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.002) -> float:
    """Seconds until ``check()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - start


@pytest.fixture
def site() -> Iterator[Path]:
    need("root")
    base = Path(tempfile.mkdtemp(prefix="hw-wtp-", dir="/var/tmp"))
    www = base / "www"
    (www / "css").mkdir(parents=True)
    (www / "logs").mkdir()
    (www / "index.html").write_text("<html><body>welcome</body></html>\n")
    (www / "css" / "site.css").write_text("body { color: black }\n")
    (www / "logs" / "access.log").write_text("")
    (www / "app.log").write_text("")
    os.chmod(www / "index.html", 0o644)
    try:
        yield base
    finally:
        _unlock(base)
        shutil.rmtree(base, ignore_errors=True)


def _config(base: Path, **kw: Any) -> WtpConfig:
    d = ProtectedDir(str(base / "www"), excluded_subdirs=["logs"], excluded_types=["log"])
    return WtpConfig(dirs=[d], backup_path=str(base / "backup"), **kw)


@pytest.fixture
def guard_factory(
    site: Path,
) -> Iterator[Callable[..., tuple[WtpGuard, list[tuple[dict[str, Any], AlarmEvent]]]]]:
    made: list[WtpGuard] = []

    def make(**kw: Any) -> tuple[WtpGuard, list[tuple[dict[str, Any], AlarmEvent]]]:
        seen: list[tuple[dict[str, Any], AlarmEvent]] = []
        immut = kw.pop("immutability", None)
        g = WtpGuard(_config(site, **kw), immutability=immut, on_event=lambda r, a: seen.append((r, a)))
        made.append(g)
        return g, seen

    yield make
    for g in made:
        g.stop()


def _tamper_until_written(
    path: Path, text: str, linger: float = 0.5
) -> tuple[subprocess.Popen[bytes], float]:
    for _ in range(10):
        proc = start_tamper(path, text, linger)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        written_at = time.monotonic()
        if line.strip() == b"written":
            return proc, written_at
        proc.wait(5)
        time.sleep(0.05)
    pytest.fail("the tamper write never got through the lock")


def test_locked_page_refuses_writes_even_for_root(site: Path, guard_factory: Any) -> None:
    guard, seen = guard_factory()
    status = guard.enable()
    assert status.state == "protected", status
    assert status.message == ""
    page = site / "www" / "index.html"
    imm = KernelImmutability()
    assert imm.is_immutable(str(page)) and imm.is_immutable(str(site / "www" / "css"))
    assert not imm.is_immutable(str(site / "www" / "logs" / "access.log"))
    assert not imm.is_immutable(str(site / "www" / "app.log"))
    with pytest.raises(PermissionError) as err:
        page.write_text("defaced")
    assert err.value.errno == errno.EPERM
    with pytest.raises(PermissionError):
        page.unlink()
    with pytest.raises(PermissionError):
        (site / "www" / "new.php").write_text("<?php system($_GET['c']);")
    # excluded log is still writable and never rolled back
    (site / "www" / "logs" / "access.log").write_text("GET /\n")
    (site / "www" / "app.log").write_text("started\n")
    time.sleep(0.3)
    assert (site / "www" / "logs" / "access.log").read_text() == "GET /\n"
    assert (site / "www" / "app.log").read_text() == "started\n"
    assert page.read_text().startswith("<html>")
    assert seen == []


def test_attribute_removed_and_write_is_restored_with_process(site: Path, guard_factory: Any) -> None:
    guard, seen = guard_factory()
    guard.enable()
    page = site / "www" / "index.html"
    original = page.read_text()
    proc, written_at = _tamper_until_written(page, "HACKED BY X")
    try:
        wait_until(lambda: page.read_text() == original, 1.0)
        took = time.monotonic() - written_at
        assert took < 1.0
        wait_until(lambda: bool(seen), 1.0)
        assert KernelImmutability().is_immutable(str(page))
        assert oct(page.stat().st_mode & 0o777) == oct(0o644)
    finally:
        proc.wait(5)
    record, alarm = next((r, a) for r, a in seen if r["action"] == "modified")
    assert record["path"] == str(page) and record["outcome"] == "restored"
    assert alarm.event_class == "wtp_0001" and alarm.evidence["file_path"] == str(page)
    try:
        Fanotify.open().close()
        fanotify_ok = True
    except OSError:
        fanotify_ok = False
    if fanotify_ok:
        assert record["process"]["pid"] == proc.pid
        assert os.path.realpath(record["process"]["exe"]) == os.path.realpath(sys.executable)


def test_delete_restored_and_new_file_held(site: Path, guard_factory: Any) -> None:
    guard, seen = guard_factory()
    guard.enable()
    www = site / "www"
    css = www / "css" / "site.css"
    # attacker clears the directory and file flags, deletes the page and drops a web shell
    subprocess.run(["chattr", "-i", str(www / "css"), str(css)], check=True)
    css.unlink()
    wait_until(css.exists, 1.0)
    assert css.read_text() == "body { color: black }\n"
    subprocess.run(["chattr", "-i", str(www)], check=True)
    shell = www / "shell.php"
    try:
        shell.write_text("<?php eval($_POST[1]);")
    except PermissionError:
        pass  # the guard re-locked the directory first: also a refusal
    wait_until(lambda: not shell.exists(), 1.0)
    wait_until(lambda: any(r["action"] == "created" for r, _ in seen), 1.0)
    held = next(r for r, _ in seen if r["action"] == "created")
    assert held["outcome"] == "removed"
    assert Path(held["moved_to"]).read_text().startswith("<?php")
    assert str(site / "backup" / "tamper") in held["moved_to"]
    assert any(r["action"] == "deleted" and r["path"] == str(css) for r, _ in seen)
    wait_until(lambda: KernelImmutability().is_immutable(str(www)), 1.0)


def test_privileged_process_update_allowed_and_backup_refreshed(site: Path, guard_factory: Any) -> None:
    cp = os.path.realpath(shutil.which("cp") or "/usr/bin/cp")
    guard, seen = guard_factory(privileged=[cp])
    guard.enable()
    page = site / "www" / "index.html"
    new = site / "release.html"
    new.write_text("<html>v2</html>\n")
    assert run_privileged(guard, ["cp", str(new), str(page)]) == 0
    assert page.read_text() == "<html>v2</html>\n"
    assert KernelImmutability().is_immutable(str(page))
    manifest, _ = load_manifest(str(site / "backup" / "manifest.json"))
    assert manifest[str(page)].size == len("<html>v2</html>\n")
    time.sleep(0.3)
    assert page.read_text() == "<html>v2</html>\n"
    assert seen == []
    # the refreshed backup is what a later tamper is rolled back to
    proc, _ = _tamper_until_written(page, "defaced", 0.0)
    proc.wait(5)
    wait_until(lambda: page.read_text() == "<html>v2</html>\n", 1.0)
    with pytest.raises(NotPrivileged):
        run_privileged(guard, ["tee", str(page)])


def test_restore_latency(site: Path, guard_factory: Any) -> None:
    guard, _seen = guard_factory()
    guard.enable()
    page = site / "www" / "index.html"
    original = page.read_text()
    wall: list[float] = []
    for i in range(20):
        proc, written_at = _tamper_until_written(page, f"defaced {i}", 0.0)
        wait_until(lambda: page.read_text() == original, 1.0, interval=0.001)
        wall.append((time.monotonic() - written_at) * 1000)
        proc.wait(5)
    wall.sort()
    p95 = wall[int(len(wall) * 0.95) - 1]
    print(f"wtp restore latency ms: median {statistics.median(wall):.1f} p95 {p95:.1f} max {wall[-1]:.1f}")
    print(f"wtp guard-side ms: p95 {sorted(guard.latencies_ms)[int(len(guard.latencies_ms) * 0.95) - 1]:.2f}")
    assert p95 < 500


class _NoImmutable:
    """A filesystem without the attribute (what tmpfs on older kernels, vfat, ... answer)."""

    def is_immutable(self, path: str) -> bool:
        raise ImmutableUnsupported(f"{path}: immutable attribute not supported")

    def set_immutable(self, path: str, on: bool) -> None:
        raise ImmutableUnsupported(f"{path}: immutable attribute not supported")


def test_no_immutable_support_falls_back_to_watch_and_restore(site: Path, guard_factory: Any) -> None:
    guard, _seen = guard_factory(immutability=_NoImmutable())
    status = guard.enable()
    assert status.state == "protected"
    assert status.message.startswith(NO_IMMUTABLE)
    assert status.immutable == {str(site / "www"): False}
    page = site / "www" / "index.html"
    original = page.read_text()
    page.write_text("defaced")
    wait_until(lambda: page.read_text() == original, 1.0)
    (site / "www" / "x.php").write_text("<?php")
    wait_until(lambda: not (site / "www" / "x.php").exists(), 1.0)


def test_full_backup_disk_reports_error_and_locks_nothing(site: Path, guard_factory: Any) -> None:
    backup = site / "backup"
    backup.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(backup)], check=True)
    try:
        (site / "www" / "big.bin").write_bytes(os.urandom(256 * 1024))
        guard, _ = guard_factory()
        status = guard.enable()
        assert status.state == "error"
        assert "backup_disk_full" in status.message
        assert not KernelImmutability().is_immutable(str(site / "www" / "index.html"))
    finally:
        subprocess.run(["umount", str(backup)], check=False)


def test_suspend_resume_and_disable(site: Path, guard_factory: Any) -> None:
    guard, _seen = guard_factory()
    guard.enable()
    www = site / "www"
    page = www / "index.html"
    imm = KernelImmutability()
    guard.suspend(str(www))
    assert not imm.is_immutable(str(page))
    page.write_text("<html>edited while suspended</html>")
    time.sleep(0.3)
    assert page.read_text() == "<html>edited while suspended</html>"
    guard.resume(str(www))
    assert imm.is_immutable(str(page))
    proc, _ = _tamper_until_written(page, "defaced", 0.0)
    proc.wait(5)
    wait_until(lambda: page.read_text() == "<html>edited while suspended</html>", 1.0)
    status = guard.disable()
    assert status.state == "disabled"
    assert not imm.is_immutable(str(page)) and not imm.is_immutable(str(www))
    page.write_text("free")
    assert guard.config.dirs[0].path == str(www)


def test_privileged_session_still_rolls_back_other_writers(site: Path, guard_factory: Any) -> None:
    # a deploy tool of its own (a copy of sh): the shell running pytest must not count as privileged
    deploy = site / "deploy"
    shutil.copy2(os.path.realpath(shutil.which("sh") or "/bin/sh"), deploy)
    guard, seen = guard_factory(privileged=[str(deploy)], privileged_children=True)
    guard.enable()
    page = site / "www" / "index.html"
    css = site / "www" / "css" / "site.css"
    original = page.read_text()
    done: list[int] = []
    # the privileged shell (and, with children trusted, its cp) updates the stylesheet while an
    # unrelated process defaces the page during the same unlocked window
    script = f"sleep 0.3; cp {site / 'new.css'} {css}; sleep 0.5"
    (site / "new.css").write_text("body { color: red }\n")
    t = threading.Thread(target=lambda: done.append(run_privileged(guard, [str(deploy), "-c", script])))
    t.start()
    try:
        wait_until(lambda: not KernelImmutability().is_immutable(str(page)), 1.0)
        intruder = subprocess.Popen(
            [sys.executable, "-c", f"open({str(page)!r}, 'w').write('defaced'); import time; time.sleep(0.5)"]
        )
        wait_until(lambda: page.read_text() == original, 1.0)
        intruder.wait(5)
    finally:
        t.join(10)
    assert done == [0]
    assert css.read_text() == "body { color: red }\n"
    assert page.read_text() == original
    assert KernelImmutability().is_immutable(str(css))
    assert [r["path"] for r, _ in seen] == [str(page)]


def test_scheduled_window_unlocks_then_relocks_with_new_backup(site: Path, guard_factory: Any) -> None:
    sched = Schedule(enabled=True, windows=[Window("02:00", "03:00")], weekdays=[1])
    guard, seen = guard_factory(schedule=sched)
    guard.enable()
    page = site / "www" / "index.html"
    imm = KernelImmutability()
    assert guard.apply_schedule(datetime(2026, 11, 23, 2, 10))  # a Monday, in the window
    assert guard.status().state == "unprotected_window"
    assert not imm.is_immutable(str(page))
    page.write_text("<html>planned update</html>")
    time.sleep(0.3)
    assert page.read_text() == "<html>planned update</html>"
    assert not guard.apply_schedule(datetime(2026, 11, 23, 3, 0))
    assert guard.status().state == "protected"
    assert imm.is_immutable(str(page))
    proc, _ = _tamper_until_written(page, "defaced", 0.0)
    proc.wait(5)
    wait_until(lambda: page.read_text() == "<html>planned update</html>", 1.0)
    assert all(r["path"] == str(page) for r, _ in seen)
