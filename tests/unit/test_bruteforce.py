"""Brute-force rule: windows, aggregation, escalation, safety list, success after brute force, memory."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest

from hostward.agent.detectors.bruteforce import (
    BRUTE_FORCE,
    BRUTE_FORCE_SUCCEEDED,
    SUCCESSFUL_LOGIN,
    BruteForceDetector,
    BruteForceSettings,
    SafetyList,
    Verdict,
)
from hostward.agent.detectors.logevents import LoginEvent

T0 = datetime(2025, 11, 24, 12, 0, tzinfo=UTC).timestamp()
ATTACKER = "203.0.113.7"
_ports = itertools.count(40000)


def ev(
    address: str | None = ATTACKER,
    *,
    kind: str = "failure",
    counting: str = "attempt",
    port: int | None = None,
    user: str = "root",
    service: str = "sshd",
    ts: float | None = None,
    method: str | None = "password",
    pattern: str = "test",
) -> LoginEvent:
    if port is None and kind == "failure" and counting != "followup":
        port = next(_ports)
    return LoginEvent(
        kind, service, user, address, method, ts, pattern, port, counting if kind == "failure" else ""
    )


def detector(**settings: object) -> BruteForceDetector:
    ids = (f"id-{i}" for i in itertools.count())
    return BruteForceDetector(BruteForceSettings(**settings), ids=lambda: next(ids))  # type: ignore[arg-type]


def attack(d: BruteForceDetector, n: int, start: float, step: float = 1.0, **kw: object) -> list[Verdict]:
    return [d.feed(ev(**kw), start + i * step) for i in range(n)]  # type: ignore[arg-type]


def test_five_failures_in_thirty_seconds_block_at_the_fifth() -> None:
    d = detector()
    verdicts = attack(d, 5, T0, step=5)
    assert not any(verdicts[:4])
    last = verdicts[4]
    assert len(last.blocks) == 1
    block = last.blocks[0]
    assert (block.network, block.service, block.attempts, block.address) == (
        f"{ATTACKER}/32",
        "sshd",
        5,
        ATTACKER,
    )
    assert block.lock_seconds == 12 * 3600
    assert block.until == datetime.fromtimestamp(T0 + 20 + 12 * 3600, UTC)
    [alarm] = last.alarms
    assert alarm.event_class == BRUTE_FORCE and alarm.severity == "high"
    e = alarm.evidence
    assert (e["login_ip"], e["username"], e["service"], e["attempts"], e["blocked"]) == (
        ATTACKER,
        "root",
        "sshd",
        5,
        True,
    )
    assert e["first_failure"] == datetime.fromtimestamp(T0, UTC).isoformat()
    assert e["last_failure"] == datetime.fromtimestamp(T0 + 20, UTC).isoformat()
    assert alarm.fingerprint == f"login_0001:sshd:{ATTACKER}/32"


def test_slow_attack_is_caught_by_the_long_window() -> None:
    d = detector()
    verdicts = attack(d, 15, T0, step=200)  # 5 in 30 s never happens; 15 within 2,800 s does
    assert not any(verdicts[:14])
    assert verdicts[14].blocks and "15 failures in 3600 s" in verdicts[14].blocks[0].reason


def test_spread_out_failures_do_not_block() -> None:
    d = detector()
    assert not any(attack(d, 30, T0, step=300))  # 12 per hour at most


def test_windows_are_per_service() -> None:
    d = detector()
    out = [d.feed(ev(service="sshd" if i % 2 else "vsftpd"), T0 + i) for i in range(8)]
    assert not any(out)
    assert d.feed(ev(service="sshd"), T0 + 9).blocks


def test_event_timestamps_drive_the_window_when_present() -> None:
    d = detector()
    # five lines written 10 s apart but read in one batch: 40 s apart in the log -> no short-window block
    out = [d.feed(ev(ts=T0 + 10 * i), T0 + 41) for i in range(5)]
    assert not any(out)


def test_stale_lines_are_ignored_and_future_lines_clamped() -> None:
    d = detector()
    assert not any(d.feed(ev(ts=T0 - 7200), T0) for _ in range(10))
    assert d.counters["stale"] == 10
    verdicts = [d.feed(ev(ts=T0 + 86_400 * 300), T0 + i) for i in range(5)]  # wrong year: read as now
    assert verdicts[4].blocks


def test_ipv6_sources_are_aggregated_per_64() -> None:
    d = detector()
    verdicts = [d.feed(ev(f"2001:db8:1:2::{i + 1:x}"), T0 + i) for i in range(5)]
    assert verdicts[4].blocks[0].network == "2001:db8:1:2::/64"
    other = detector(ipv6_prefix=128)
    assert not any(other.feed(ev(f"2001:db8:1:2::{i + 1:x}"), T0 + i) for i in range(5))


def test_ipv4_mapped_and_plain_ipv4_are_one_source() -> None:
    # the parser normalises ::ffff:a.b.c.d; the detector sees the same text
    d = detector()
    assert attack(d, 5, T0)[4].blocks


def test_repeat_offenders_get_escalating_lock_times_up_to_the_cap() -> None:
    d = detector(lock_minutes=60, escalation_factor=2.0, max_lock_minutes=180)
    locks = []
    now = T0
    for _ in range(4):
        block = attack(d, 5, now)[4].blocks[0]
        locks.append(block.lock_seconds)
        now = block.until.timestamp() + 10  # after expiry
    assert locks == [3600, 7200, 10800, 10800]
    assert d.health().counters["blocks"] == 4


def test_escalation_is_forgotten_after_the_offender_memory() -> None:
    d = detector(lock_minutes=60, offender_memory_s=86_400)
    first = attack(d, 5, T0)[4].blocks[0]
    second = attack(d, 5, first.until.timestamp() + 2 * 86_400)[4].blocks[0]
    assert second.lock_seconds == first.lock_seconds == 3600
    assert second.times_blocked == 1


def test_no_new_decision_while_blocked() -> None:
    d = detector()
    attack(d, 5, T0)
    later = attack(d, 20, T0 + 10)
    assert not any(later)
    assert d.counters["while_blocked"] == 20


def test_manual_unblock_lets_the_next_attack_block_again_with_escalation() -> None:
    d = detector()
    first = attack(d, 5, T0)[4].blocks[0]
    assert d.unblock(first.network)
    assert not d.unblock(first.network)
    second = attack(d, 5, T0 + 100)[4].blocks[0]
    assert second.lock_seconds == 2 * first.lock_seconds


@pytest.mark.parametrize(
    ("safety", "reason"),
    [
        (SafetyList.build(whitelist=["203.0.113.0/24"]), "whitelist"),
        (SafetyList.build(manager=[ATTACKER]), "manager"),
        (SafetyList.build(own=[ATTACKER]), "own_address"),
        (SafetyList.build(admin_sessions=[ATTACKER]), "admin_session"),
    ],
)
def test_safety_list_is_never_blocked(safety: SafetyList, reason: str) -> None:
    d = detector()
    d.configure(safety=safety)
    verdict = attack(d, 5, T0)[4]
    assert not verdict.blocks
    [alarm] = verdict.alarms
    assert alarm.evidence["protected"] == reason and alarm.evidence["blocked"] is False
    quiet = detector(alarm_whitelisted=False)
    quiet.configure(safety=safety)
    assert not any(attack(quiet, 10, T0))


def test_loopback_is_always_protected() -> None:
    d = detector()
    for address in ("127.0.0.1", "::1"):
        assert not any(v.blocks for v in attack(d, 6, T0, address=address))


def test_a_64_holding_a_protected_address_blocks_only_the_attacker() -> None:
    d = detector()
    d.configure(safety=SafetyList.build(whitelist=["2001:db8:1:2::100"]))
    block = [d.feed(ev("2001:db8:1:2::1"), T0 + i) for i in range(5)][4].blocks[0]
    assert block.network == "2001:db8:1:2::1/128"


def test_block_attackers_off_alarms_without_blocking() -> None:
    d = detector(block_attackers=False)
    verdict = attack(d, 5, T0)[4]
    assert not verdict.blocks and verdict.alarms[0].evidence["blocked"] is False
    # the cooldown keeps one alarm per source and service
    assert not any(v.alarms for v in attack(d, 10, T0 + 10))


def test_success_after_brute_force_is_critical() -> None:
    d = detector()
    attack(d, 5, T0)
    verdict = d.feed(ev(kind="success", user="admin", method="password"), T0 + 60)
    codes = [a.event_class for a in verdict.alarms]
    assert codes == [SUCCESSFUL_LOGIN, BRUTE_FORCE_SUCCEEDED]
    critical = verdict.alarms[1]
    assert critical.severity == "critical"
    e = critical.evidence
    assert (e["login_ip"], e["username"], e["service"], e["attempts"]) == (ATTACKER, "admin", "sshd", 5)
    assert e["method"] == "password" and e["first_failure"] and e["last_failure"]


def test_success_without_brute_force_is_only_reported() -> None:
    d = detector()
    attack(d, 3, T0)
    verdict = d.feed(ev(kind="success"), T0 + 10)
    assert [a.event_class for a in verdict.alarms] == [SUCCESSFUL_LOGIN]
    silent = detector(report_success=False)
    assert not silent.feed(ev(kind="success"), T0)


def test_success_long_after_the_attack_is_not_login_0002() -> None:
    d = detector(report_success=False, success_window_s=3600)
    attack(d, 5, T0)
    assert not d.feed(ev(kind="success"), T0 + 7200)


def test_connection_counting() -> None:
    d = detector()
    # three password attempts on one connection, then its [preauth] close: three, not four
    for _ in range(3):
        assert not d.feed(ev(port=5000), T0)
    assert not d.feed(ev(port=5000, counting="connection"), T0)
    # "Invalid user" then "Failed password" on one connection: one
    assert not d.feed(ev(port=5001, counting="connection"), T0 + 1)
    verdict = d.feed(ev(port=5001), T0 + 1)
    assert not verdict
    assert d.counters["counted"] == 4
    # PAM follow-ups never count
    for _ in range(10):
        assert not d.feed(ev(counting="followup"), T0 + 2)
    assert d.feed(ev(port=5002, counting="connection"), T0 + 3).blocks  # a key scanner's closed connection


def test_events_without_address_or_other_kinds_are_ignored() -> None:
    d = detector()
    assert not any(d.feed(ev(None), T0 + i) for i in range(10))
    assert not any(d.feed(ev(kind="other"), T0 + i) for i in range(10))
    assert d.counters["no_address"] == 10


def test_memory_is_bounded() -> None:
    d = detector(max_sources=100, max_offenders=100)
    for i in range(1000):
        d.feed(ev(f"198.51.{i // 250}.{i % 250 + 1}"), T0 + i)
    h = d.health().counters
    assert h["tracked_sources"] == 100 and h["evicted"] == 900


def test_restore_block_from_the_ledger() -> None:
    d = detector(lock_minutes=60)
    d.restore_block(f"{ATTACKER}/32", until=T0 + 3600, times_blocked=1, blocked_at=T0)
    assert d.blocked(f"{ATTACKER}/32", T0 + 10)
    assert not any(attack(d, 10, T0 + 10))
    block = attack(d, 5, T0 + 4000)[4].blocks[0]
    assert block.lock_seconds == 7200


def test_settings_validation_and_policy_parsing() -> None:
    with pytest.raises(ValueError, match="lock_minutes=0"):
        BruteForceSettings(lock_minutes=0)
    with pytest.raises(ValueError, match="lock_minutes=43201"):
        BruteForceSettings(lock_minutes=43_201)
    s = BruteForceSettings.from_policy({"lock_minutes": "30", "report_success": False, "unknown": 1})
    assert (s.lock_minutes, s.report_success) == (30, False)
    with pytest.raises(ValueError, match="report_success"):
        BruteForceSettings.from_policy({"report_success": "yes"})
    with pytest.raises(ValueError, match="short_threshold"):
        BruteForceSettings.from_policy({"short_threshold": "many"})


def test_safety_list_validation() -> None:
    with pytest.raises(ValueError, match="at most 50"):
        SafetyList.build(whitelist=[f"192.0.2.{i}" for i in range(51)])
    with pytest.raises(
        ValueError, match=re.escape("login whitelist: not an IP address or CIDR: '10.0.0.300'")
    ):
        SafetyList.build(whitelist=["10.0.0.300"])
    ok = SafetyList.build(whitelist=["2001:db8::/48", "192.0.2.0/24"])
    assert len(ok.networks()) == 4  # with loopback v4 and v6
