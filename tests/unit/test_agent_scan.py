"""ScanRunner: event order, cancellation, unsupported kinds, detector failures never lose the scan."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from hostward.agent.collectors.assets import AssetCollector
from hostward.agent.scan import Commit, ScanJob, ScanRunner
from hostward.agent.transport.outbox import Outbox, parse_body
from hostward.wire import AlarmEvent, AssetSnapshot
from tests.fakes.agent_clock import FakeClock


def tree(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return tmp_path


def events(box: Outbox) -> list[dict[str, object]]:
    return [parse_body(i) for i in box.batch(1000, max_bytes=10**9)]


def test_scan_events_in_order_with_detections(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")
    clock = FakeClock()

    def hook(snapshot: AssetSnapshot, now: datetime, commit: Commit) -> None:
        commit([AlarmEvent(key="a1", occurred_at=now, event_class="user_1001", fingerprint="f")])

    runner = ScanRunner(AssetCollector(tree(tmp_path)), box, clock, on_snapshot=hook)
    result = runner.run(ScanJob("s1", "asset"))
    assert result.status == "succeeded" and result.data["detections"] == 1
    got = events(box)
    kinds = [(e["kind"], e.get("status")) for e in got]
    assert kinds[0] == ("scan_progress", "running")
    assert kinds[-3:] == [("assets", None), ("alarm", None), ("scan_progress", "succeeded")]
    assert "kernel_modules" in str(got[-1]["detail"])  # the prepared tree has no /proc/modules


def test_cancel_during_scan(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")
    job = ScanJob("s2", "full")

    def throttle(cancel: threading.Event) -> None:
        job.cancel.set()

    result = ScanRunner(AssetCollector(tree(tmp_path)), box, FakeClock(), throttle=throttle).run(job)
    assert result.status == "failed" and result.detail == "scan cancelled"
    assert [e.get("status") for e in events(box)] == ["running", "cancelled"]


def test_cancelled_before_start(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")
    job = ScanJob("s3", "full")
    job.cancel.set()
    ScanRunner(AssetCollector(tree(tmp_path)), box, FakeClock()).run(job)
    assert [e.get("status") for e in events(box)] == ["cancelled"]


def test_unsupported_kind(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")
    result = ScanRunner(AssetCollector(tree(tmp_path)), box, FakeClock()).run(ScanJob("s4", "malware"))
    assert result.status == "failed" and "not supported" in result.detail
    [event] = events(box)
    assert event["status"] == "failed" and event["progress"] == 100


def test_failing_detector_hook_still_reports_the_scan(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")

    def hook(snapshot: AssetSnapshot, now: datetime, commit: Commit) -> None:
        raise RuntimeError("detector bug")

    result = ScanRunner(AssetCollector(tree(tmp_path)), box, FakeClock(), on_snapshot=hook).run(
        ScanJob("s5", "full")
    )
    assert result.status == "succeeded"
    assert [e["kind"] for e in events(box)][-2:] == ["assets", "scan_progress"]


def test_every_category_failing_fails_the_scan(tmp_path: Path) -> None:
    box = Outbox.open(tmp_path / "state")

    class Broken(AssetCollector):
        def collect_category(self, category: str) -> list[object]:
            raise OSError("nope")

    result = ScanRunner(Broken(tmp_path), box, FakeClock()).run(ScanJob("s6", "asset"))
    assert result.status == "failed" and "every asset category failed" in result.detail
