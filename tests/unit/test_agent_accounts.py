"""Accounts detector: user_1001 account change, user_1002 unsafe (uid 0) account."""

from __future__ import annotations

from datetime import UTC, datetime

from hostward.agent.detectors import Observation
from hostward.agent.detectors.accounts import AccountsDetector, accounts_interval, diff_accounts
from hostward.wire import Account, PolicyBundle, PolicyState

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def acct(name: str, uid: int, shell: str = "/bin/bash", groups: list[str] | None = None) -> Account:
    return Account(name=name, uid=uid, gid=uid, home=f"/home/{name}", shell=shell, groups=groups or [])


BASE = [acct("root", 0), acct("daemon", 1, "/usr/sbin/nologin"), acct("alice", 1000)]


def bundle(protection: bool = True, **policies: PolicyState) -> PolicyBundle:
    return PolicyBundle(
        version=3, group_id="g", group_name="g", edition="premium", protection=protection, policies=policies
    )


def test_first_collection_raises_nothing() -> None:
    assert diff_accounts(None, BASE, NOW) == []


def test_no_change_raises_nothing() -> None:
    assert diff_accounts(BASE, list(BASE), NOW) == []


def test_added_account() -> None:
    [alarm] = diff_accounts(BASE, [*BASE, acct("bob", 1001)], NOW)
    assert alarm.event_class == "user_1001" and alarm.severity == "medium"
    assert alarm.fingerprint == "user_1001:bob:1001:added"
    assert alarm.occurred_at == NOW and alarm.key
    ev = alarm.evidence
    assert (ev["username"], ev["uid"], ev["gid"], ev["home"], ev["shell"], ev["change"]) == (
        "bob",
        1001,
        1001,
        "/home/bob",
        "/bin/bash",
        "added",
    )


def test_deleted_account() -> None:
    [alarm] = diff_accounts(BASE, BASE[:2], NOW)
    assert alarm.event_class == "user_1001" and alarm.evidence["change"] == "deleted"
    assert alarm.evidence["username"] == "alice"


def test_new_uid0_account_is_unsafe() -> None:
    alarms = diff_accounts(BASE, [*BASE, acct("toor", 0)], NOW)
    classes = sorted(a.event_class for a in alarms)
    assert classes == ["user_1001", "user_1002"]
    unsafe = next(a for a in alarms if a.event_class == "user_1002")
    assert unsafe.severity == "high" and unsafe.fingerprint == "user_1002:toor:0"


def test_uid_becoming_zero_is_unsafe_and_a_modification() -> None:
    changed = [BASE[0], BASE[1], acct("alice", 0)]
    alarms = diff_accounts(BASE, changed, NOW)
    by_class = {a.event_class: a for a in alarms}
    assert by_class["user_1002"].evidence["old_uid"] == 1000
    assert by_class["user_1001"].evidence["change"] == "modified"
    assert by_class["user_1001"].evidence["changes"]["uid"] == {"old": 1000, "new": 0}


def test_group_and_shell_changes_are_modifications() -> None:
    changed = [BASE[0], acct("daemon", 1, "/bin/bash"), acct("alice", 1000, groups=["sudo"])]
    alarms = diff_accounts(BASE, changed, NOW)
    assert {a.evidence["username"] for a in alarms} == {"daemon", "alice"}
    assert all(a.event_class == "user_1001" for a in alarms)


def test_detector_alarms_only_with_protection_and_keeps_learning() -> None:
    det = AccountsDetector()
    det.configure(bundle(protection=False))
    assert det.feed(Observation("accounts", BASE), NOW) == []
    assert det.feed(Observation("accounts", [*BASE, acct("bob", 1001)]), NOW) == []
    assert det.health().status == "disabled" and det.health().counters["suppressed"] == 1
    det.configure(bundle(protection=True))
    assert det.feed(Observation("accounts", [*BASE, acct("bob", 1001)]), NOW) == []  # bob already known
    [alarm] = det.feed(Observation("accounts", [*BASE, acct("bob", 1001), acct("eve", 1002)]), NOW)
    assert alarm.evidence["username"] == "eve"
    assert det.health().status == "running" and det.health().counters["alarms"] == 1


def test_detector_primed_baseline_and_disabled_policy() -> None:
    det = AccountsDetector()
    det.prime(BASE)
    det.configure(bundle(asset_discovery=PolicyState(enabled=False)))
    assert det.feed(Observation("accounts", [*BASE, acct("bob", 1001)]), NOW) == []
    det.configure(bundle(asset_discovery=PolicyState(enabled=True)))
    assert len(det.feed(Observation("accounts", BASE), NOW)) == 1  # bob deleted


def test_interval_from_policy() -> None:
    assert accounts_interval(None) == 3600
    assert accounts_interval(bundle()) == 3600
    b = bundle(asset_discovery=PolicyState(enabled=True, settings={"accounts_interval_s": 120}))
    assert accounts_interval(b) == 120
    b = bundle(asset_discovery=PolicyState(enabled=True, settings={"accounts_interval_s": "x"}))
    assert accounts_interval(b) == 3600
