"""File integrity monitoring end to end: real ``hostward manager serve`` and ``hostward agent run`` (root).

A premium server gets a custom policy group whose ``file_protection`` policy monitors a directory under
a temp dir (the default important-file set is off, so nothing else on the test host can alarm). The
first baseline is silent; a real write (a shell redirection) reaches the manager as a change record and
a ``fileprotect_0004`` alarm with the old and new SHA-256 (and the writing process where fanotify
works); ``hostward fim accept`` handles the alarm, the agent confirms the new baseline, and a FIM scan
afterwards finds nothing. Waits are bounded; measured latency is printed as ``TIMING`` lines.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.procs import (
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
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.root]

MANAGER_CONFIG = {"heartbeat_interval": 2}
AGENT_CONFIG = {"backoff_cap_s": 2.0}
CHANGE_TIMEOUT_S = 20  # bounded: a realtime change reaches the manager in well under a second
SCAN_TIMEOUT_S = 120


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Fim(AdminApi):
    """The running stack, seen from an operator: CLI, API and (read-only) the manager's database."""

    def __init__(self, manager: Manager, agent: Agent, server_id: str, www: Path) -> None:
        self.m = manager
        self.www = www
        self.agent = agent
        self.server_id = server_id
        super().__init__(manager)

    @property
    def logs(self) -> list[Path]:
        return [self.m.log, self.agent.log]

    def cli(self, *args: str | Path) -> Any:
        result = hostward(args, self.m.home)
        return as_json(result) if "--json" in args else ok(result)

    def changes(self, **filters: Any) -> list[dict[str, Any]]:
        """Change records of the test's directory (a path search: nothing else of the host counts)."""
        items: list[dict[str, Any]] = self.get(
            "/fim/changes", server_id=self.server_id, q=str(self.www), limit=200, **filters
        )["items"]
        return items

    def fim_alarms(self, **filters: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            "/alarms", server_id=self.server_id, event_class="fileprotect_0004", limit=200, **filters
        )["items"]
        return items

    def wait(self, what: str, check: Callable[[], Any], timeout: float = CHANGE_TIMEOUT_S) -> Any:
        return wait_for(what, check, timeout, interval=0.1, logs=self.logs)

    def monitor_health(self) -> dict[str, Any] | None:
        detectors = self.get(f"/servers/{self.server_id}")["health"].get("detectors", [])
        return next((d for d in detectors if d["name"] == "fim_monitor"), None)

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

    def settle_scans(self) -> None:
        """Cancel the server's active scans and wait until none is queued or running."""

        def active() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = self.get("/scans", server_id=self.server_id)["items"]
            return [s for s in items if s["status"] in ("queued", "running")]

        for scan in active():
            # A scan may end on its own meanwhile: 409, fine.
            resp = self.api.post(f"/scans/{scan['id']}/cancel")
            assert resp.status_code in (200, 409), resp.text
        self.wait("active scans to end", lambda: not active(), SCAN_TIMEOUT_S)

    def scan(self, kind: str) -> dict[str, Any]:
        (scan,) = self.cli("scans", "start", self.server_id, "--kind", kind, "--json")

        def done() -> dict[str, Any] | None:
            current: dict[str, Any] = self.get(f"/scans/{scan['id']}")
            return current if current["status"] not in ("queued", "running") else None

        result: dict[str, Any] = self.wait(f"{kind} scan to finish", done, SCAN_TIMEOUT_S)
        return result


@pytest.fixture
def fim(tmp_path: Path) -> Iterator[tuple[Fim, Path]]:
    need("root", "the agent's realtime FIM (fanotify) and protection need root")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_bytes(b"hello\n")
    (www / "about.html").write_bytes(b"about\n")
    with running_manager(tmp_path / "m", config=MANAGER_CONFIG) as manager, Procs() as procs:
        home = manager.home
        login(manager, home)
        token = as_json(hostward(["token", "create", "--json"], home))
        agent = enroll_agent(token, tmp_path / "agents", "fim-e2e", home, config=AGENT_CONFIG, procs=procs)
        agent.start()
        server_id = agent.server_id
        stack = Fim(manager, agent, server_id, www)
        try:
            stack.wait(
                "agent online",
                lambda: stack.get(f"/servers/{server_id}")["agent_status"] == "online",
                30,
            )
            directories = json.dumps([{"path": str(www), "recursive": True, "ignore": ["*.swp"]}])
            stack.cli("policies", "copy", "tenant_linux_premium_default_policy_group", "--name", "fim-e2e")
            stack.cli(
                "policies", "set", "fim-e2e", "file_protection", "--enable",
                "--set", "important_files=false", "--set", f"directories={directories}",
            )  # fmt: skip
            # The premium preset (deployed at enable, before the custom group) must not watch the host's
            # important files either: other tests on this host change /etc/passwd.
            stack.cli(
                "policies", "set", "tenant_linux_premium_default_policy_group", "file_protection",
                "--set", "important_files=false",
            )  # fmt: skip
            stack.cli("quotas", "add", "--edition", "premium", "--count", "1")
            stack.cli("protection", "enable", server_id, "--edition", "premium")
            stack.cli("policies", "apply", "fim-e2e", server_id)
            yield stack, www
        finally:
            stack.api.close()


def test_change_alarm_accept_and_quiet_rescan(fim: tuple[Fim, Path], record_property: Any) -> None:
    stack, www = fim
    page = www / "index.html"

    # The first baseline is silent: the policy arrives, the agent baselines the directory.
    def baselined() -> dict[str, Any] | None:
        # The custom group (one root: the directory) replaced the premium default (the important files).
        h = stack.monitor_health()
        if h is None or h["status"] != "running":
            return None
        c = h["counters"]
        done = c.get("roots") == 1 and c.get("roots_pending") == 0 and c.get("entries") == 3
        return h if done and c.get("watch_watches", 0) >= 1 else None

    health = stack.wait("the FIM baseline of the monitored directory", baselined, 60)
    # The comprehensive scan queued at enable runs every capability's check; FIM's ran first (it
    # found nothing). Cancel the rest: the manual FIM scan below needs the server free.
    stack.settle_scans()
    assert stack.changes() == [] and stack.fim_alarms() == []
    fanotify = bool(health["counters"].get("watch_fanotify"))
    print(f"FIM fanotify available: {fanotify}")

    # A real write by a real process.
    started = time.monotonic()
    # The shell outlives its write a little, as an interactive one would: the agent reads the writer's
    # /proc entry when the event arrives, and a process already gone leaves only its pid.
    writer = subprocess.Popen(["sh", "-c", f"printf 'defaced\\n' > '{page}'; sleep 3"])
    (record,) = stack.wait(
        "the change record", lambda: [c for c in stack.changes() if c["path"] == str(page)]
    )
    (alarm,) = stack.wait("the fileprotect_0004 alarm", lambda: stack.fim_alarms(status="unhandled"))
    latency = round(time.monotonic() - started, 3)
    writer.wait(10)
    print(f"TIMING fim_change_to_manager_s: {latency}")
    record_property("fim_change_to_manager_s", latency)
    assert (record["old_hash"], record["new_hash"]) == (sha256(b"hello\n"), sha256(b"defaced\n"))
    assert (record["action"], record["change_type"], record["classification"]) == (
        "modify",
        "file",
        "alarmed",
    )
    assert "sha256" in record["attributes"]
    assert alarm["evidence"]["file_path"] == str(page)
    assert (alarm["evidence"]["old_hash"], alarm["evidence"]["file_hash"]) == (
        sha256(b"hello\n"),
        sha256(b"defaced\n"),
    )
    if fanotify:
        # fanotify names the writer: the shell that did the redirection.
        assert Path(record["process_exe"]).name in ("sh", "dash", "bash"), record
        assert record["process_pid"] == writer.pid and record["process_user"] == "root"
        assert alarm["evidence"]["process_path"] == record["process_exe"]

    hosts = stack.cli("fim", "hosts", "--json")
    (host,) = [h for h in hosts if h["server_id"] == stack.server_id]
    assert (host["total"], host["alarmed"], host["last_change_path"]) == (1, 1, str(page))
    listed = stack.cli("fim", "changes", "--server", stack.server_id, "--json")
    assert [c["id"] for c in listed] == [record["id"]]

    # Accept: the alarm is handled, the agent re-baselines and confirms.
    accepted = stack.cli("fim", "accept", stack.server_id, str(page), "--remark", "planned deploy", "--json")
    assert (accepted["records_accepted"], accepted["alarms_handled"]) == (1, 1)
    assert stack.fim_alarms(status="unhandled") == []
    (baseline,) = stack.wait(
        "the agent's new-baseline record", lambda: stack.changes(classification="baseline")
    )
    assert baseline["path"] == str(page) and baseline["new_hash"] == sha256(b"defaced\n")
    assert baseline["accepted_by"] == "admin"
    command = stack.wait(
        "the accept command's result",
        lambda: (
            (row := stack.command(accepted["command_id"])) is not None
            and row["status"] != "delivered"
            and row["status"] != "queued"
            and row
        ),
    )
    assert command["status"] == "succeeded", dict(command)
    assert json.loads(command["result"])["accepted"] == [str(page)]
    assert stack.changes(classification="alarmed") == []

    # No further alarm for that state: a full FIM check finds nothing.
    scan = stack.scan("fim")
    assert scan["status"] == "succeeded", scan
    assert "0 changes" in scan["detail"], scan
    (only,) = stack.fim_alarms()
    assert (only["id"], only["status"], only["count"]) == (alarm["id"], "handled", 1)
    assert len(stack.changes()) == 2  # the change and its new baseline

    # Detection goes on after an accept: deleting another page alarms again.
    (www / "about.html").unlink()
    stack.wait(
        "the delete alarm",
        lambda: [
            a
            for a in stack.fim_alarms(status="unhandled")
            if a["evidence"]["file_path"].endswith("about.html")
        ],
    )
    (deleted,) = stack.changes(action="delete")
    assert deleted["old_hash"] == sha256(b"about\n") and deleted["new_hash"] is None
