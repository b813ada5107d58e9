"""Web tamper protection and ransomware prevention end to end: real ``hostward manager serve`` and
``hostward agent run`` (root), real immutable flags, fanotify, a real encrypting script.

WTP is configured and enabled through the API (wtp quota); the page is locked (root's write refused),
a tamper with the flag removed is rolled back and reaches the manager as a tamper event naming the
process and a ``wtp_0001`` alarm; ``hostward wtp exec -- cp`` updates the page; with the local blob
destroyed, the manager's copy restores the page. Ransomware: a policy with ``alarm_and_isolate`` bound to
the server; the encrypting script is killed at the bait, the alarm reaches the manager and the snapshot
restore (through the API) brings the files back.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.attacks import ENCRYPT, start_tamper
from tests.conftest import need
from tests.procs import (
    HOSTWARD,
    AdminApi,
    Agent,
    Manager,
    Procs,
    as_json,
    enroll_agent,
    hostward,
    login,
    ok,
    running_manager,
)
from tests.procs import wait_for as _wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

TIMEOUT_S = 30


class Stack(AdminApi):
    def __init__(self, manager: Manager, agent: Agent, server_id: str) -> None:
        self.m, self.agent, self.server_id = manager, agent, server_id
        super().__init__(manager, timeout=20)

    def call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.api.request(method, path, **kw)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def wait(self, what: str, check: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
        return _wait_for(what, check, timeout, interval=0.2, logs=[self.m.log, self.agent.log])

    def command(self, command_id: str) -> sqlite3.Row | None:
        conn = sqlite3.connect(f"file:{self.m.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            row: sqlite3.Row | None = conn.execute(
                "SELECT status, result, detail FROM agent_commands WHERE id = ?", (command_id,)
            ).fetchone()
            return row
        finally:
            conn.close()

    def finished(self, command_id: str) -> sqlite3.Row:
        row: sqlite3.Row = self.wait(
            f"command {command_id}",
            lambda: (
                (r := self.command(command_id)) is not None and r["status"] in ("succeeded", "failed") and r
            ),
        )
        return row

    def alarms(self, event_class: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call(
            "GET", "/alarms", params={"server_id": self.server_id, "event_class": event_class, "limit": 100}
        )["items"]
        return items


def _unlock(path: Path) -> None:
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    need("root", "immutable flags, fanotify and killing processes need root")
    with running_manager(tmp_path / "m", config={"heartbeat_interval": 2}) as manager, Procs() as procs:
        login(manager, manager.home)
        token = as_json(hostward(["token", "create", "--json"], manager.home))
        agent = enroll_agent(
            token, tmp_path / "agents", "wtp-e2e", manager.home, config={"backoff_cap_s": 2.0}, procs=procs
        )
        agent.start()
        s = Stack(manager, agent, agent.server_id)
        try:
            s.wait(
                "agent online", lambda: s.call("GET", f"/servers/{s.server_id}")["agent_status"] == "online"
            )
            yield s
        finally:
            s.api.close()
            agent.stop()
            _unlock(tmp_path)


def test_wtp_and_ransomware_through_manager_and_agent(stack: Stack, tmp_path: Path) -> None:
    www = tmp_path / "www"
    (www / "css").mkdir(parents=True)
    page = www / "index.html"
    page.write_text("<html>welcome</html>\n")
    (www / "css" / "site.css").write_text("body {}\n")
    sid = stack.server_id
    ok(hostward(["quotas", "add", "--edition", "wtp", "--count", "1"], stack.m.home))
    config = {
        "dirs": [{"path": str(www)}],
        "backup_path": str(tmp_path / "wtp-backup"),
        "privileged": ["/usr/bin/cp"],
        "remote_backup": True,
    }
    stack.call("PUT", f"/wtp/servers/{sid}/config", json=config)
    result = stack.call("POST", "/wtp/enable", json={"server_ids": [sid]})
    assert result["results"][0]["ok"], result
    server = stack.wait(
        "WTP protected", lambda: (s := stack.call("GET", f"/wtp/servers/{sid}"))["state"] == "protected" and s
    )
    assert server["backup"]["files"] == 2, server
    with pytest.raises(PermissionError):
        page.write_text("defaced")

    proc = start_tamper(page, "defaced", linger=2.0)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"written"
    started = time.monotonic()
    stack.wait("page restored", lambda: page.read_text() == "<html>welcome</html>\n", 1.0)
    print(f"TIMING wtp_restore_s: {time.monotonic() - started:.3f}")
    events = stack.wait(
        "tamper event at the manager",
        lambda: stack.call("GET", "/wtp/events", params={"server_id": sid})["items"],
    )
    assert events[0]["path"] == str(page) and events[0]["process_pid"] == proc.pid, events
    assert stack.wait("wtp_0001 alarm", lambda: stack.alarms("wtp_0001"))
    proc.wait(10)

    # the privileged deploy through the running agent
    release = tmp_path / "release.html"
    release.write_text("<html>release 2</html>\n")
    done = subprocess.run(
        [
            HOSTWARD,
            "wtp",
            "exec",
            "--state-dir",
            str(stack.agent.state_dir),
            "--",
            "cp",
            str(release),
            str(page),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert page.read_text() == "<html>release 2</html>\n"
    time.sleep(0.5)
    assert page.read_text() == "<html>release 2</html>\n"  # not rolled back

    # the local copy destroyed: the manager's copy brings the page back
    manifest = json.loads((tmp_path / "wtp-backup" / "manifest.json").read_text())
    sha = manifest["entries"][str(page)]["sha256"]
    stack.wait(  # the manager keeps its copy under <data_dir>/wtp-backup/<server_id>/
        "the manager holds the page's blob",
        lambda: any(p.name == sha for p in (tmp_path / "m").rglob(sha)),
    )
    os.unlink(tmp_path / "wtp-backup" / "blobs" / sha[:2] / sha)
    _unlock(www)
    page.unlink()
    time.sleep(0.5)  # the guard cannot restore it from the local backup now
    assert not page.exists()
    out = stack.call("POST", f"/wtp/servers/{sid}/restore-remote", json={"path": str(page)})
    row = stack.finished(out["command_id"])
    assert row["status"] == "succeeded", row["detail"]
    assert page.read_text() == "<html>release 2</html>\n"

    # ransomware on another directory of the same server (the wtp edition includes it)
    docs = tmp_path / "docs"
    rng = random.Random(3)
    for sub in ("finance", "hr"):
        (docs / sub).mkdir(parents=True)
        for i in range(20):
            (docs / sub / f"doc{i:02d}.docx").write_bytes(rng.randbytes(1200 + i))
    originals = {p: p.read_bytes() for p in docs.rglob("*.docx")}
    policy = stack.call(
        "POST",
        "/ransomware/policies",
        json={"name": "e2e-docs", "protected_dirs": [str(docs)], "action": "alarm_and_isolate", "bait": True},
    )
    res = stack.call("POST", "/ransomware/enable", json={"server_ids": [sid], "policy_id": policy["id"]})
    assert res["results"][0]["ok"], res
    snaps = stack.wait(
        "first snapshot at the manager",
        lambda: stack.call("GET", "/ransomware/snapshots", params={"server_id": sid})["items"],
    )
    script = tmp_path / "encrypt.py"
    script.write_text(ENCRYPT)
    enc = subprocess.Popen(
        [sys.executable, str(script), str(docs), "0.005"], stdout=subprocess.PIPE, text=True
    )
    out_text, _ = enc.communicate(timeout=30)
    assert "DONE" not in out_text
    assert len(list(docs.rglob("*.locked"))) < 20  # stopped before it finished the first directory
    alarm = stack.wait("ransomware_0001 at the manager", lambda: stack.alarms("ransomware_0001"))[0]
    assert alarm["severity"] == "critical"
    restore = stack.call(
        "POST", "/ransomware/restore", json={"server_id": sid, "snapshot_id": snaps[0]["snapshot_id"]}
    )
    row = stack.finished(restore["command_id"])
    assert row["status"] == "succeeded", row["detail"]
    assert {p: p.read_bytes() for p in docs.rglob("*.docx") if not p.name.startswith(".")} == originals
    assert not list(docs.rglob("*.locked"))
