"""The agent's FIM component over real files, inotify and a real outbox: policy gating, silent first
baseline, realtime records and alarms, accept, scan checks, FIM switched off and on again."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.collectors.assets import AssetCollector
from hostward.agent.fimrunner import DB_NAME, FimRunner, fim_bundle
from hostward.agent.scan import CheckUnavailable, ScanJob, ScanRunner
from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.wire import Command, CommandResult, PolicyBundle, PolicyState
from tests.fakes.agent_clock import FakeClock

WAIT_S = 10.0


def bundle(
    directory: Path,
    *,
    edition: str | None = "premium",
    enabled: bool = True,
    protection: bool = True,
    **extra: Any,
) -> PolicyBundle:
    settings = {"important_files": False, "directories": [{"path": str(directory)}], **extra}
    return PolicyBundle(
        version=1,
        group_id="g",
        group_name="g",
        edition=edition,
        protection=protection,
        policies={"file_protection": PolicyState(enabled=enabled, settings=settings)},
    )


class Harness:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.state.mkdir()
        self.www = root / "www"
        self.www.mkdir()
        (self.www / "index.html").write_text("hello")
        self.outbox = Outbox.open(self.state)
        self.results: list[tuple[str, CommandResult]] = []
        self.runner = FimRunner(
            self.state / DB_NAME,
            self.outbox,
            FakeClock(),
            post_result=lambda cid, r: self.results.append((cid, r)),
            use_system_packages=False,
        )

    def events(self) -> list[dict[str, Any]]:
        items = self.outbox.batch(10_000, max_bytes=10**9)
        self.outbox.discard([i.key for i in items], "read by test")
        return [parse_body(i) for i in items]

    def wait_events(self, predicate: Any, timeout: float = WAIT_S) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.runner._threads:
                self.runner.step()
            seen += self.events()
            if predicate(seen):
                return seen
            time.sleep(0.05)
        pytest.fail(f"timed out; events so far: {seen}")


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    try:
        yield harness
    finally:
        harness.runner.stop()
        harness.outbox.close()


def alarms(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "alarm"]


def records(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == "record" and e["topic"] == "fim_change"]


def test_fim_bundle_gates_on_edition_protection_and_policy(tmp_path: Path) -> None:
    assert fim_bundle(None) is None
    on = fim_bundle(bundle(tmp_path))
    assert on is not None and on.policies["file_integrity"].enabled
    for off in (
        bundle(tmp_path, edition="basic"),
        bundle(tmp_path, edition=None),
        bundle(tmp_path, protection=False),
        bundle(tmp_path, enabled=False),
        PolicyBundle(version=1, group_id=None, group_name=None, edition="premium", protection=True),
    ):
        view = fim_bundle(off)
        assert view is not None and not view.policies["file_integrity"].enabled


def test_realtime_change_accept_and_stale_accept(h: Harness) -> None:
    h.runner.configure(bundle(h.www))
    h.runner.start()
    assert h.runner.flush()
    deadline = time.monotonic() + WAIT_S
    while not h.runner.health() or h.runner.health()[0].counters.get("entries", 0) < 2:
        assert time.monotonic() < deadline, "first baseline not built"
        time.sleep(0.05)
    assert h.events() == []  # the first baseline is silent
    page = h.www / "index.html"
    page.write_text("defaced")
    got = h.wait_events(lambda ev: alarms(ev) and records(ev))
    (alarm,) = alarms(got)
    (record,) = records(got)
    assert alarm["event_class"] == "fileprotect_0004"
    assert alarm["evidence"]["file_path"] == str(page)
    new_hash = record["data"]["new"]["sha256"]
    assert record["data"]["old"]["sha256"] != new_hash and record["data"]["operation"] == "modify"
    health = {d.name: d for d in h.runner.health()}
    assert health["fim_monitor"].status == "running", health["fim_monitor"].reason
    assert health["fim_monitor"].counters["watch_watches"] >= 1

    # Accept the state the operator saw: a baseline record, no alarm.
    payload = {"paths": [str(page)], "expected": {str(page): new_hash}, "actor": "alice"}
    command = Command(id="c1", kind="fim_accept", payload=payload, created_at=FakeClock().now())
    assert h.runner.accept_command(command) is None  # answered by the control thread
    got = h.wait_events(lambda ev: records(ev))
    assert alarms(got) == []
    (baseline,) = records(got)
    assert baseline["data"]["operation"] == "accept" and baseline["data"]["new"]["sha256"] == new_hash
    assert baseline["data"]["actor"] == "alice"
    deadline = time.monotonic() + WAIT_S
    while not h.results:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cid, result = h.results[0]
    assert cid == "c1" and result.status == "succeeded" and result.data["accepted"] == [str(page)]

    # Accepting a state that is gone: the newer change is reported (here by the watcher, first), the
    # accept absorbs nothing and says so.
    page.write_text("defaced again")
    got = h.wait_events(lambda ev: alarms(ev))
    assert [a["evidence"]["file_path"] for a in alarms(got)] == [str(page)]
    result = h.runner.accept({"paths": [str(page)], "expected": {str(page): new_hash}}, "c2")
    assert result.status == "succeeded" and result.data["changed_since"] == [str(page)]
    assert result.data["accepted"] == []
    assert h.runner.flush() and records(h.events()) == []
    unmonitored = h.runner.accept({"paths": ["/nowhere/else"]}, "c3")
    assert unmonitored.data["unmonitored"] == ["/nowhere/else"]
    assert h.runner.accept({"paths": ["relative"]}, "c4").status == "failed"


def test_scan_checks_and_fim_off_then_on(h: Harness) -> None:
    scans = ScanRunner(AssetCollector(h.root), h.outbox, FakeClock())
    scans.add_check("fim", h.runner.scan_check)
    with pytest.raises(ValueError, match="already"):
        scans.add_check("fim", h.runner.scan_check)

    h.runner.configure(bundle(h.www, realtime=False))
    h.runner.step()
    assert h.events() == []
    (h.www / "new.php").write_text("<?php eval($_POST['x']);")
    result = scans.run(ScanJob("s1", "fim"))
    assert result.status == "succeeded", result.detail
    assert "file integrity: 3 entries checked, 1 changes" in result.detail
    got = h.events()
    assert [a["evidence"]["file_path"] for a in alarms(got)] == [str(h.www / "new.php")]
    assert [e.get("status") for e in got if e["kind"] == "scan_progress"] == ["running", "succeeded"]
    # Findings are in the outbox before the scan reports its end.
    kinds = [e["kind"] for e in got]
    assert kinds.index("alarm") < len(kinds) - 1

    full = scans.run(ScanJob("s2", "full"))
    assert full.status == "succeeded" and "file integrity: 3 entries checked, 0 changes" in full.detail

    # Off (a basic edition): the baseline is dropped, a fim scan fails with the reason, a full scan
    # does not mention FIM; changes made meanwhile never alarm, even when FIM comes back.
    h.runner.configure(bundle(h.www, edition="basic"))
    h.runner.step()
    assert not (h.state / DB_NAME).exists()
    assert h.runner.health() == []
    with pytest.raises(CheckUnavailable, match="enterprise edition"):
        h.runner.scan_check(ScanJob("s3", "fim"))
    failed = scans.run(ScanJob("s4", "fim"))
    assert failed.status == "failed" and "off on this server" in failed.detail
    assert "file integrity" not in scans.run(ScanJob("s5", "full")).detail
    (h.www / "index.html").write_text("changed while off")
    h.events()
    h.runner.configure(bundle(h.www, realtime=False))
    h.runner.step()
    assert alarms(h.events()) == []
    assert "0 changes" in scans.run(ScanJob("s6", "fim")).detail


def test_bad_policy_is_reported_not_fatal(h: Harness) -> None:
    too_many = [{"path": f"/srv/d{i}"} for i in range(60)]
    h.runner.configure(bundle(h.www, directories=too_many))
    h.runner.step()
    (health,) = [d for d in h.runner.health() if d.name == "fim_monitor"]
    assert health.status == "degraded" and "at most 50" in health.reason


def test_restart_reports_changes_made_while_stopped(h: Harness, tmp_path: Path) -> None:
    h.runner.configure(bundle(h.www, realtime=False))
    h.runner.step()
    h.runner.stop()
    os.unlink(h.www / "index.html")
    again = FimRunner(h.state / DB_NAME, h.outbox, FakeClock(), use_system_packages=False)
    try:
        again.configure(bundle(h.www, realtime=False))
        again.step()
        got = h.events()
        assert [(r["data"]["path"], r["data"]["operation"]) for r in records(got)] == [
            (str(h.www / "index.html"), "delete")
        ]
        assert len(alarms(got)) == 1
    finally:
        again.stop()
