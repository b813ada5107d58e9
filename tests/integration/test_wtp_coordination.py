"""Web tamper protection together with ransomware baits, agent stops during ``wtp exec``, and bad input
inside a protected tree: real files on ext4 (a loop image otherwise), the real immutable bit, real
inotify/fanotify, the real WTP and ransomware runners of the agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.ransomrunner import RansomRunner
from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.agent.wtp import WtpConfig
from hostward.agent.wtp.backup import load_manifest
from hostward.agent.wtp.config import ProtectedDir
from hostward.agent.wtp.guard import WtpGuard
from hostward.wire import Command, PolicyBundle
from tests.fakes.agent_clock import FakeClock
from tests.integration import test_wtp_runner as runner_tests
from tests.integration.test_wtp_runner import Harness, immutable, wait_until, wtp_bundle, wtp_settings

pytestmark = pytest.mark.root

base = runner_tests.base  # fixtures shared with the runner tests
harnesses = runner_tests.harnesses


def rw_bundle(www: Path, wtp: dict[str, Any]) -> PolicyBundle:
    policy = {
        "name": "site",
        "protected_dirs": [str(www)],
        "excluded_dirs": [],
        "file_types": ["docx", "xlsx", "pdf", "html"],
        "action": "alarm",
        "bait": True,
        "snapshot_interval_h": 24,
        "snapshot_keep": 2,
    }
    return PolicyBundle(
        version=5,
        group_id="g1",
        group_name="default",
        edition="wtp",
        protection=True,
        global_settings={"wtp": wtp, "ransomware": {"enabled": True, "policy": policy}},
    )


def events(outbox: Outbox) -> list[dict[str, Any]]:
    items = outbox.batch(10_000, max_bytes=10**9)
    outbox.discard([i.key for i in items], "read")
    return [parse_body(i) for i in items]


class RansomHarness:
    def __init__(self, state: Path, wtp: Harness | None) -> None:
        self.outbox = wtp.outbox if wtp is not None else Outbox.open(state)
        self.runner = RansomRunner(state, self.outbox, FakeClock())
        self.runner.wtp = wtp.runner if wtp is not None else None


def test_baits_are_planted_in_a_locked_site_and_stay_outside_wtp(
    base: Path, harnesses: list[Harness]
) -> None:
    www = base / "www"
    wtp = Harness(base / "state")
    harnesses.append(wtp)
    bundle = rw_bundle(www, wtp_settings(base))
    wtp.runner.configure(bundle)
    wtp.runner.step()
    assert immutable(www) and immutable(www / "index.html")
    rw = RansomHarness(base / "state", wtp)
    try:
        rw.runner.configure(bundle)
        rw.runner.step()
        baits = [b.path for b in rw.runner.baits]
        top = [p for p in baits if os.path.dirname(p) == str(www)]
        assert len(top) == 3, baits  # docx, xlsx, pdf in the locked top directory
        seen = events(wtp.outbox)
        [status] = [e["data"] for e in seen if e.get("topic") == "ransomware_status"]
        assert status == {"state": "protected", "message": "", "baits": len(baits)}
        assert immutable(www) and immutable(www / "css")  # locked again after the plant
        assert all(os.path.exists(p) and not immutable(Path(p)) for p in baits)
        time.sleep(0.5)  # the WTP watcher saw the creates: nothing moved away, no tamper
        assert all(os.path.exists(p) for p in baits)
        assert not [e for e in events(wtp.outbox) if e.get("topic") == "wtp_tamper"]
        guard = wtp.runner.guard
        assert guard is not None and not set(baits) & set(guard.manifest())
        # web content is still locked; a scan reconciles without touching the baits
        with pytest.raises(PermissionError):
            (www / "index.html").write_text("defaced")
        guard.reconcile_all()
        assert all(os.path.exists(p) for p in baits)
        # an encryptor rewriting a bait: the write gets through (the bait is not locked) and the
        # ransomware monitor raises the critical alarm naming it
        victim = top[0]
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                f"open({victim!r}, 'r+b').write(b'ENCRYPTED'); import time; time.sleep(0.5)",
            ],
            check=True,
        )
        assert proc.returncode == 0

        def alarm() -> bool:
            seen.extend(events(wtp.outbox))
            return any(e.get("event_class") == "ransomware_0001" for e in seen)

        wait_until(alarm, 5.0, "ransomware_0001 for the bait")
        assert not [e for e in seen if e.get("topic") == "wtp_tamper"]
        # rotation (12 h later, or a bait gone): the old baits go, new ones come, all in the locked tree
        rw.runner.monitor.stop()  # type: ignore[union-attr]
        rw.runner.monitor = None
        state = json.loads(Path(rw.runner.bait_state).read_text())
        state["planted_at"] = 0
        Path(rw.runner.bait_state).write_text(json.dumps(state))
        rw.runner._start_monitor(rw.runner._applied.policy)  # type: ignore[union-attr]
        fresh = {b.path for b in rw.runner.baits}
        # (a new name may repeat an old one: the word list is short)
        assert fresh and not any(os.path.exists(p) for p in set(baits) - fresh)
        assert victim not in fresh or Path(victim).read_bytes() != b"ENCRYPTED"
        assert immutable(www) and guard.foreign == fresh
        time.sleep(0.3)
        assert all(os.path.exists(p) for p in fresh)
        # turning ransomware off removes the baits from the locked tree too
        rw.runner.configure(wtp_bundle(wtp_settings(base)))
        rw.runner.step()
        assert not any(os.path.exists(p) for p in fresh) and immutable(www)
        assert sorted(os.listdir(www)) == ["css", "index.html", "logs"]
    finally:
        rw.runner.stop()


def test_wtp_enabled_after_the_baits_leaves_them_out_of_the_backup(
    base: Path, harnesses: list[Harness]
) -> None:
    www = base / "www"
    wtp = Harness(base / "state")
    harnesses.append(wtp)
    bundle = rw_bundle(www, wtp_settings(base))
    rw = RansomHarness(base / "state", wtp)
    try:
        rw.runner.configure(bundle)
        rw.runner.step()  # WTP not running yet
        baits = {b.path for b in rw.runner.baits}
        assert baits
        wtp.runner.configure(bundle)
        wtp.runner.step()
        guard = wtp.runner.guard
        assert guard is not None and immutable(www / "index.html")
        manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
        assert not baits & set(manifest) and not baits & set(guard.manifest())
        assert not any(immutable(Path(p)) for p in baits)
        # a restart of WTP (same configuration, backup reloaded) still leaves them alone
        wtp.runner.stop()
        again = Harness(base / "state")
        harnesses.append(again)
        again.runner.configure(bundle)
        again.runner.step()
        assert again.runner.counters["reloads"] == 1
        time.sleep(0.3)
        assert all(os.path.exists(p) and not immutable(Path(p)) for p in baits)
        assert not [e for e in events(again.outbox) if e.get("topic") == "wtp_tamper"]
    finally:
        rw.runner.stop()


def test_snapshot_restore_into_a_locked_site_goes_through_wtp(base: Path, harnesses: list[Harness]) -> None:
    www = base / "www"
    page = www / "index.html"
    before = page.read_text()
    wtp = Harness(base / "state")
    harnesses.append(wtp)
    bundle = rw_bundle(www, wtp_settings(base))
    rw = RansomHarness(base / "state", wtp)
    try:
        rw.runner.configure(bundle)
        rw.runner.step()  # first snapshot, WTP not running yet
        assert rw.runner.snapshots is not None
        [snap] = rw.runner.snapshots.list()
        page.write_text("<html>changed before protection</html>\n")
        wtp.runner.configure(bundle)
        wtp.runner.step()
        guard = wtp.runner.guard
        assert guard is not None and immutable(page)
        events(wtp.outbox)  # drop what came before the restore

        result = rw.runner.restore_command(
            Command(
                id="c1",
                kind="ransomware_restore",
                payload={"snapshot_id": snap.id},
                created_at=FakeClock().now(),
            )
        )
        assert result.status == "succeeded", result.detail
        assert page.read_text() == before and immutable(page) and immutable(www)
        # the restored page is WTP's backup now: it stays, and nothing was recorded as tampering
        assert guard.manifest()[str(page)].size == len(before)
        assert not wtp.runner.session_path.exists()
        time.sleep(0.5)
        assert page.read_text() == before
        assert not [e for e in events(wtp.outbox) if e.get("topic") == "wtp_tamper"]
        with pytest.raises(PermissionError):
            page.write_text("defaced")
    finally:
        rw.runner.stop()


# ---- the agent stopping during `hostward wtp exec` ---------------------------------------------------


def test_agent_stop_during_a_privileged_session_keeps_the_update(
    base: Path, harnesses: list[Harness]
) -> None:
    page = base / "www" / "index.html"
    first = Harness(base / "state", use_fanotify=False)
    harnesses.append(first)
    first.runner.configure(wtp_bundle(wtp_settings(base)))
    first.runner.step()
    session = first.runner.privileged("/usr/bin/cp")
    session.__enter__()
    assert (base / "state" / "wtp-session.json").exists() and not immutable(page)
    page.write_text("release 2\n")  # the privileged command's update
    first.runner.stop()  # the agent stops while the command is still running
    assert immutable(page) and page.read_text() == "release 2\n"
    assert not (base / "state" / "wtp-session.json").exists()
    manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
    assert manifest[str(page)].size == len("release 2\n")
    second = Harness(base / "state", use_fanotify=False)
    harnesses.append(second)
    second.runner.configure(wtp_bundle(wtp_settings(base)))
    second.runner.step()
    assert second.runner.counters["reloads"] == 1
    time.sleep(0.3)
    assert page.read_text() == "release 2\n" and immutable(page)  # not "restored" to the old page
    assert not second.records("wtp_tamper")
    try:
        session.__exit__(None, None, None)  # the CLI's connection finally ends
    except Exception as exc:  # pragma: no cover - the old guard is stopped; nothing may break
        pytest.fail(f"late session end failed: {exc}")
    assert page.read_text() == "release 2\n" and immutable(page)


def test_agent_died_during_a_privileged_session_captures_afresh(base: Path, harnesses: list[Harness]) -> None:
    page = base / "www" / "index.html"
    first = Harness(base / "state", use_fanotify=False)
    harnesses.append(first)
    first.runner.configure(wtp_bundle(wtp_settings(base)))
    first.runner.step()
    session = first.runner.privileged("/usr/bin/cp")  # kept referenced: no cleanup on collection
    session.__enter__()
    page.write_text("release 3\n")
    # killed: nothing ran at exit (the watcher is gone with the process, the tree stays unlocked)
    assert first.runner.guard is not None
    first.runner.guard.stop()
    first.runner.guard = None
    assert not immutable(page)
    second = Harness(base / "state", use_fanotify=False)
    harnesses.append(second)
    second.runner.configure(wtp_bundle(wtp_settings(base)))
    second.runner.step()
    assert second.runner.counters == {**second.runner.counters, "rebuilds": 1, "reloads": 0}
    assert page.read_text() == "release 3\n" and immutable(page)
    assert not (base / "state" / "wtp-session.json").exists()
    # a normal session end clears the mark too (the next restart reloads)
    with second.runner.privileged("/usr/bin/cp"):
        page.write_text("release 4\n")
    assert not (base / "state" / "wtp-session.json").exists() and immutable(page)
    del session


# ---- bad input inside a protected tree ------------------------------------------------------------


def test_non_utf8_names_symlink_loops_and_vanishing_paths(base: Path) -> None:
    www = base / "www"
    raw = os.fsencode(www) + b"/caf\xe9.html"
    fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"latin-1 name\n")
    os.close(fd)
    os.symlink("loop", www / "loop")  # a symlink pointing at itself
    os.symlink(".", www / "css" / "up")  # a directory loop
    fifo = www / "pipe"
    os.mkfifo(fifo)
    seen: list[dict[str, Any]] = []
    cfg = WtpConfig(dirs=[ProtectedDir(str(www))], backup_path=str(base / "backup"))
    guard = WtpGuard(cfg, on_event=lambda record, _alarm: seen.append(record))
    try:
        status = guard.enable()
        assert status.state == "protected" and status.message == ""
        name = os.fsdecode(raw)
        assert immutable(Path(name))
        # the non-UTF-8 page: tampered, restored, the record serialises for the manager
        subprocess.run(["chattr", "-i", raw], check=True)
        with open(raw, "wb") as f:
            f.write(b"defaced")
        page = Path(os.fsdecode(raw))
        wait_until(lambda: page.read_bytes() == b"latin-1 name\n", 2.0, "restore of the non-UTF-8 name")
        wait_until(lambda: bool(seen), 2.0, "tamper record")
        assert seen[0]["path"] == str(www) + "/caf\\xe9.html"  # shown escaped, valid UTF-8
        seen[0]["path"].encode("utf-8")
        assert name not in (e["path"] for e in seen)
        # symlink loops are recorded as links, never followed; the FIFO is left alone
        manifest = guard._manifest
        assert (
            manifest[str(www / "loop")].kind == "symlink" and manifest[str(www / "css" / "up")].target == "."
        )
        assert str(fifo) not in manifest
        # paths vanishing under a scan: the whole tree is reconciled without error
        subprocess.run(["chattr", "-i", str(www / "css")], check=True)
        os.unlink(www / "css" / "up")
        guard.reconcile_all()
        wait_until(lambda: os.path.islink(www / "css" / "up"), 2.0, "symlink restored")
        assert immutable(www / "css")
    finally:
        guard.disable()


# ---- `wtp exec` of a privileged script: its processes are recognised -------------------------------


def test_privileged_script_and_its_children_through_wtp_exec(base: Path, harnesses: list[Harness]) -> None:
    from hostward.agent.wtpctl import WtpControl
    from tests.integration.test_wtp_runner import exec_cli

    www = base / "www"
    page, css = www / "index.html", www / "css" / "site.css"
    (base / "new.css").write_text("body { color: red }\n")
    script = base / "deploy.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "release $1" > {page}\n'  # written by the shell: the command wtp exec started
        # written by a child of the command (which stays a moment, so /proc still describes it)
        f"/bin/sh -c 'echo \"body {{ color: red }}\" > {css}; sleep 0.5'\n"  # a builtin: sh writes
        "sleep 0.3\n"
    )
    script.chmod(0o755)
    h = Harness(base / "state")  # with fanotify: writers are named
    harnesses.append(h)
    settings = wtp_settings(base, privileged=[str(script)], privileged_children=False)
    h.runner.configure(wtp_bundle(settings))
    h.runner.step()
    ctl = WtpControl(base / "state", h.runner)
    ctl.start()
    try:
        done = exec_cli(base / "state", str(script), "5")
        assert done.returncode == 0, done.stderr
        assert page.read_text() == "release 5\n" and immutable(page)  # the script's own write is kept
        assert css.read_text() == "body { color: black }\n"  # its child's is not (children not allowed)
        tampers = h.records("wtp_tamper")
        assert [t["path"] for t in tampers] == [str(css)] and tampers[0]["process"][
            "exe"
        ] == os.path.realpath("/bin/sh")
        # with privileged_children the child's write is kept too
        h.runner.configure(wtp_bundle({**settings, "privileged_children": True}))
        h.runner.step()
        done = exec_cli(base / "state", str(script), "6")
        assert done.returncode == 0, done.stderr
        assert page.read_text() == "release 6\n" and css.read_text() == "body { color: red }\n"
        assert immutable(css) and not h.records("wtp_tamper")
        manifest, _ = load_manifest(str(base / "backup" / "manifest.json"))
        assert manifest[str(css)].size == len("body { color: red }\n")
    finally:
        ctl.stop()


def test_a_file_vanishing_during_the_backup_is_skipped(tmp_path: Path) -> None:
    from hostward.agent.wtp.backup import BlobStore, capture

    www = tmp_path / "www"
    www.mkdir()
    (www / "gone.html").write_text("temporary")
    (www / "index.html").write_text("kept")

    class Racing(BlobStore):
        """Deletes the file between the walk seeing it and the copy (the window of a real race)."""

        def put_file(self, src: str) -> tuple[str, int]:
            if src.endswith("gone.html"):
                os.unlink(src)
            return super().put_file(src)

    manifest = capture(Racing(str(tmp_path / "backup")), str(www), lambda _p: False)
    assert set(manifest) == {str(www), str(www / "index.html")}
