"""FimMonitor as the runtime drives it: policy -> silent first baseline -> realtime alarm -> health."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from hostward.agent.detectors.base import Observation
from hostward.agent.detectors.fim import FimDetector, fim_policy
from hostward.agent.fim.monitor import FimMonitor
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState


def bundle(directory: Path, *, enabled: bool = True) -> PolicyBundle:
    settings = {"important_files": False, "directories": [{"path": str(directory)}]}
    return PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition="enterprise",
        protection=True,
        policies={"file_integrity": PolicyState(enabled=enabled, settings=settings)},
    )


def test_monitor_end_to_end(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("hello")
    seen: list[Observation] = []
    arrived = threading.Event()

    def emit(obs: Observation) -> None:
        seen.append(obs)
        arrived.set()

    monitor = FimMonitor(tmp_path / "state" / "fim.db", emit, use_system_packages=False)
    detector = FimDetector()
    b = bundle(www)
    detector.configure(b)
    try:
        monitor.configure(fim_policy(b))
        first = monitor.check()
        assert first is not None and first.changes == [] and first.baselined_roots == [str(www).encode()]
        assert seen == []
        (www / "index.html").write_text("defaced")
        assert arrived.wait(5)
        events = [e for obs in seen for e in detector.feed(obs, datetime.now(UTC))]
        alarms = [e for e in events if isinstance(e, AlarmEvent)]
        assert [a.event_class for a in alarms] == ["fileprotect_0004"]
        assert alarms[0].evidence["file_path"] == str(www / "index.html")
        health = monitor.health()
        assert health.status == "running" and health.counters["entries"] == 2
        assert health.counters["watch_watches"] >= 1
        monitor.configure(fim_policy(bundle(www, enabled=False)))
        assert monitor.health().status == "disabled"
        seen.clear()
        (www / "index.html").write_text("quiet now")
        time.sleep(0.5)
        assert seen == []
    finally:
        monitor.stop()


def test_unreadable_baseline_is_set_aside_and_rebuilt(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "a").write_text("a")
    db = tmp_path / "state" / "fim.db"
    db.parent.mkdir()
    db.write_bytes(b"not a database" * 100)
    monitor = FimMonitor(db, lambda obs: None, use_system_packages=False)
    try:
        monitor.configure(fim_policy(bundle(www)))
        result = monitor.check()
        assert result is not None and result.changes == []  # silent first baseline
        assert (tmp_path / "state" / "fim.db.unreadable").read_bytes().startswith(b"not a database")
        assert monitor.engine is not None and monitor.engine.health().counters["entries"] == 2
        assert "rebuilt" in monitor.health().reason
    finally:
        monitor.stop()
