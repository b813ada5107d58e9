"""The FIM detector: changes -> records and alarms (pure), and the file_integrity policy."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import pytest

from hostward.agent.detectors.base import Detector, Observation
from hostward.agent.detectors.fim import (
    FILE_DIR_CHANGE,
    IMPORTANT_FILE_CHANGE,
    MAX_ALARMS_PER_FEED,
    RECORD_TOPIC,
    FimDetector,
    fim_policy,
)
from hostward.agent.fim.config import FimConfigError
from hostward.agent.fim.diff import Change, PackageInfo, ProcessInfo
from hostward.agent.fim.scan import Entry
from hostward.wire import AlarmEvent, PolicyBundle, PolicyState, RecordEvent

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def entry(path: bytes, sha: bytes = b"\x01" * 32, size: int = 10, mode: int = stat.S_IFREG | 0o644) -> Entry:
    return Entry(path, mode, 0, 0, size, 7, 1, 1, sha, 0, None, None, None)


def changed(path: bytes, **kw: object) -> Change:
    return Change(path, "changed", ("sha256", "size"), entry(path), entry(path, b"\x02" * 32, 20), **kw)  # type: ignore[arg-type]


def feed(changes: list[Change]) -> tuple[list[AlarmEvent], list[RecordEvent]]:
    det = FimDetector()
    events = det.feed(Observation("fim_changes", changes), NOW)
    return [e for e in events if isinstance(e, AlarmEvent)], [e for e in events if isinstance(e, RecordEvent)]


def test_detector_satisfies_the_protocol() -> None:
    assert isinstance(FimDetector(), Detector)


def test_important_file_change_alarm_with_canonical_evidence() -> None:
    proc = ProcessInfo(4242, "/usr/bin/vim", 0, "root", "vim /etc/passwd")
    alarms, records = feed([changed(b"/etc/passwd", important=True, process=proc)])
    (alarm,) = alarms
    assert alarm.event_class == IMPORTANT_FILE_CHANGE and alarm.severity == "medium"
    ev = alarm.evidence
    assert ev["file_path"] == "/etc/passwd" and ev["file_hash"] == "02" * 32 and ev["old_hash"] == "01" * 32
    assert ev["change_type"] == "changed" and ev["operation"] == "modify"
    assert ev["old"] == {"sha256": "01" * 32, "size": 10} and ev["new"] == {"sha256": "02" * 32, "size": 20}
    assert ev["process_path"] == "/usr/bin/vim" and ev["process_pid"] == 4242
    assert "by /usr/bin/vim" in alarm.title
    (record,) = records
    assert record.topic == RECORD_TOPIC and record.data["important"] is True
    assert record.data["process"]["exe"] == "/usr/bin/vim"
    assert alarm.key != record.key


def test_operator_directory_change_is_fileprotect_0004_and_keys_are_stable() -> None:
    c = Change(b"/srv/www/index.php", "added", (), None, entry(b"/srv/www/index.php"))
    (a1,), _ = feed([c])
    (a2,), _ = feed([c])
    assert a1.event_class == FILE_DIR_CHANGE and a1.evidence["change_type"] == "added"
    assert a1.key == a2.key and a1.fingerprint == a2.fingerprint  # resends dedupe at the manager


def test_package_update_is_recorded_not_alarmed() -> None:
    alarms, records = feed(
        [changed(b"/usr/bin/ls", important=True, package=PackageInfo("dpkg", "coreutils", True))]
    )
    assert alarms == []
    (record,) = records
    assert record.data["label"] == "package_update" and record.data["package"]["name"] == "coreutils"
    # A package-owned file whose content does not match is tampering.
    alarms, _ = feed(
        [changed(b"/usr/bin/ls", important=True, package=PackageInfo("dpkg", "coreutils", False))]
    )
    assert len(alarms) == 1


def test_echo_changes_produce_nothing() -> None:
    d = stat.S_IFDIR | 0o755
    old = Entry(b"/srv", d, 0, 0, 4096, 1, 1, 1, None, 0, None, None, None)
    new = old._replace(mtime_ns=2, ctime_ns=2)
    alarms, records = feed([Change(b"/srv", "changed", ("mtime", "ctime"), old, new)])
    assert alarms == [] and records == []


def test_bursts_are_capped_with_a_summary_alarm() -> None:
    changes = [
        Change(f"/srv/f{i:04d}".encode(), "removed", (), entry(f"/srv/f{i:04d}".encode()), None)
        for i in range(MAX_ALARMS_PER_FEED + 30)
    ]
    alarms, records = feed(changes)
    assert len(records) == len(changes)
    assert len(alarms) == MAX_ALARMS_PER_FEED + 1
    summary = alarms[-1]
    assert summary.evidence["count"] == 30 and summary.evidence["change_type"] == "burst"


def test_policy_defaults_and_settings() -> None:
    default = fim_policy(None)
    assert default.enabled and any(r.path == b"/etc/shadow" for r in default.roots)
    bundle = PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition="enterprise",
        protection=True,
        policies={
            "file_integrity": PolicyState(
                enabled=True,
                settings={
                    "important_files": False,
                    "extra_files": ["/etc/hosts"],
                    "directories": [
                        {
                            "path": "/srv/www",
                            "recursive": False,
                            "ignore": ["*.log"],
                            "operations": ["create", "delete"],
                        }
                    ],
                    "rate_bytes_per_s": 10_000_000,
                },
            )
        },
    )
    policy = fim_policy(bundle)
    assert [r.path for r in policy.roots] == [b"/etc/hosts", b"/srv/www"]
    www = policy.roots[1]
    assert not www.important and not www.recursive and www.operations == {"create", "delete"}
    assert policy.rate_bytes_per_s == 10_000_000
    off = bundle.model_copy(update={"protection": False})
    assert not fim_policy(off).enabled
    too_many = bundle.model_copy(
        update={
            "policies": {
                "file_integrity": PolicyState(
                    enabled=True, settings={"directories": [{"path": f"/d{i}"} for i in range(51)]}
                )
            }
        }
    )
    with pytest.raises(FimConfigError):
        fim_policy(too_many)


def test_disabled_detector_is_quiet_and_says_so() -> None:
    det = FimDetector()
    det.configure(
        PolicyBundle(
            version=1,
            group_id=None,
            group_name=None,
            edition="basic",
            protection=True,
            policies={"file_integrity": PolicyState(enabled=False)},
        )
    )
    assert det.feed(Observation("fim_changes", [changed(b"/etc/passwd", important=True)]), NOW) == []
    assert det.health().status == "disabled"
