"""The agent's login-security component over a real log file and the real firewall logic (in-memory
backend): blocks, alarms and records, unblock commands, whitelists, editions, protection off, verify."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.enforcers.blockledger import BlockLedger
from hostward.agent.loginsec import LoginSecurity, desired_from_bundle
from hostward.core.net import parse_network
from hostward.wire import AlarmEvent, Command, PolicyBundle, PolicyState, RecordEvent
from tests.fakes.firewall import MemoryFirewall

ATTACKER = "203.0.113.9"


def bundle(
    *,
    edition: str = "premium",
    protection: bool = True,
    enabled: bool = True,
    whitelist: list[str] | None = None,
    ssh: list[str] | None = None,
    **settings: Any,
) -> PolicyBundle:
    return PolicyBundle(
        version=1,
        group_id=None,
        group_name=None,
        edition=edition,
        protection=protection,
        policies={"login_security": PolicyState(enabled=enabled, settings=settings)},
        global_settings={
            "login_security": {
                "login_whitelist": whitelist or [],
                "login_whitelist_users": [{"user": "deploy", "networks": ["198.51.100.7/32"]}],
                "ssh_whitelist": ssh or [],
            }
        },
    )


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.log = tmp / "sshd.log"
        self.log.touch()
        self.events: list[AlarmEvent | RecordEvent] = []
        self.firewalls: list[MemoryFirewall] = []
        self.port = 40000

        def factory(ledger: BlockLedger) -> MemoryFirewall:
            fw = MemoryFirewall(ledger)
            fw.ensure()
            self.firewalls.append(fw)
            return fw

        self.sec = LoginSecurity(
            state_dir=tmp / "state",
            host_root=tmp / "root",
            log_sources=[f"sshd:{self.log}", "nonsense:/x"],
            manager_url="https://127.0.0.1:10180",
            sink=self.events.extend,
            firewall_factory=factory,
            discover=False,
        )

    @property
    def fw(self) -> MemoryFirewall:
        return self.firewalls[-1]

    def write(self, *lines: str) -> None:
        with open(self.log, "a") as fh:
            fh.writelines(line + "\n" for line in lines)

    def fail(self, address: str = ATTACKER, count: int = 5, user: str = "root") -> None:
        for _ in range(count):
            self.port += 1
            self.write(f"Failed password for {user} from {address} port {self.port} ssh2")

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if isinstance(e, RecordEvent) and e.topic == topic]

    def alarms(self, code: str) -> list[AlarmEvent]:
        return [e for e in self.events if isinstance(e, AlarmEvent) and e.event_class == code]


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    r.sec.configure(bundle())
    r.sec.setup()
    r.sec.step(0)
    yield r
    r.sec.stop()


def test_block_alarm_record_unblock_and_verify(rig: Rig) -> None:
    rig.fail(count=4)
    rig.sec.step(0.5)
    # blocking is on: the firewall is ready before the first attack, with nothing blocked yet
    assert len(rig.firewalls) == 1 and not rig.fw.kernel and rig.alarms("login_0001") == []
    rig.fail(count=1)
    rig.sec.step(0.5)
    assert list(rig.fw.kernel) == [parse_network(f"{ATTACKER}/32")]
    (record,) = rig.records("blocked_ip")
    assert record["action"] == "blocked" and record["network"] == f"{ATTACKER}/32" and record["attempts"] == 5
    (alarm,) = rig.alarms("login_0001")
    assert alarm.evidence["blocked"] is True and alarm.evidence["login_ip"] == ATTACKER
    # a firewall reload removed it: verify puts it back
    rig.fw.kernel.clear()
    rig.sec.verify()
    assert list(rig.fw.kernel) == [parse_network(f"{ATTACKER}/32")]
    assert rig.sec.counters["readded"] == 1
    # the manager's unblock command
    command = Command(
        id="c1",
        kind="unblock_ip",
        payload={"network": f"{ATTACKER}/32", "blocked_ip_id": "row-1", "service": "sshd"},
        created_at=datetime.now(UTC),
    )
    result = rig.sec.cmd_unblock(command)
    assert result.status == "succeeded" and rig.fw.kernel == {}
    assert rig.records("blocked_ip")[-1] == {
        "action": "unblocked",
        "network": f"{ATTACKER}/32",
        "service": "sshd",
        "blocked_ip_id": "row-1",
        "by": "manual",
    }
    rig.sec.verify()
    assert rig.fw.kernel == {}, "an unblocked address must not come back"
    bad = rig.sec.cmd_unblock(Command(id="c2", kind="unblock_ip", payload={}, created_at=datetime.now(UTC)))
    assert bad.status == "failed"
    health = rig.sec.health()
    assert health.status == "degraded" and "unknown service" in health.reason  # the bad --log-source
    assert health.counters["blocks_applied"] == 1 and health.counters["lines_read"] == 5


def test_whitelist_ipv6_prefix_and_successes(rig: Rig) -> None:
    rig.sec.configure(bundle(whitelist=["198.51.100.0/24"], report_successful_logins=True))
    rig.fail("198.51.100.3", count=6)
    rig.fail("2001:db8:1:2::10", count=3)
    rig.fail("2001:db8:1:2::11", count=2)
    rig.write(
        "Accepted password for deploy from 198.51.100.7 port 5000 ssh2",
        "Accepted publickey for alice from 192.0.2.44 port 5001 ssh2: ED25519 SHA256:abc",
        "\x00\x01garbage " * 50,
    )
    rig.sec.step(0.5)
    assert list(rig.fw.kernel) == [parse_network("2001:db8:1:2::/64")]
    whitelisted = [a for a in rig.alarms("login_0001") if a.evidence["login_ip"] == "198.51.100.3"]
    assert whitelisted and whitelisted[0].evidence["protected"] == "whitelist"
    # successful logins: a record each for the manager's abnormal-login rule; login_1001 unless the
    # (user, IP) pair is whitelisted
    assert [(r["user"], r["address"]) for r in rig.records("login")] == [
        ("deploy", "198.51.100.7"),
        ("alice", "192.0.2.44"),
    ]
    assert [a.evidence["username"] for a in rig.alarms("login_1001")] == ["alice"]
    assert rig.sec.health().counters["lines_unparsed"] == 1


def test_basic_edition_detects_without_blocking(rig: Rig) -> None:
    rig.sec.configure(bundle(edition="basic"))
    rig.fail(count=5)
    rig.sec.step(0.5)
    assert rig.records("blocked_ip") == []
    (alarm,) = rig.alarms("login_0001")
    assert alarm.evidence["blocked"] is False
    # basic edition: no firewall rules (the premium default of the rig had them ready: removed)
    assert rig.sec.firewall is None and not any(fw.present or fw.kernel for fw in rig.firewalls)


def test_protection_off_lifts_blocks_and_removes_rules(rig: Rig) -> None:
    rig.sec.configure(bundle(ssh=["10.9.0.3/32"]))
    rig.fail(count=5)
    rig.sec.step(0.5)
    assert rig.fw.ssh_allow == [parse_network("10.9.0.3/32")] and rig.fw.kernel
    fw = rig.fw
    rig.sec.configure(bundle(protection=False))
    rig.sec.step(0)
    assert not fw.present and fw.kernel == {}
    assert rig.records("blocked_ip")[-1]["action"] == "unblocked"
    assert rig.records("blocked_ip")[-1]["by"] == "protection_off"
    assert rig.sec.health().status == "disabled"
    rig.fail(count=5)
    rig.sec.step(0.5)
    assert rig.alarms("login_0001") == [rig.alarms("login_0001")[0]], "no detection while unprotected"


def test_blocks_survive_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path)
    first.sec.configure(bundle())
    first.sec.setup()
    first.sec.step(0)
    first.fail(count=5)
    first.sec.step(0.5)
    first.sec.stop()
    first.fail("192.0.2.1", count=2)  # written while the agent is down
    second = Rig(tmp_path)
    second.sec.configure(bundle())
    second.sec.setup()
    second.sec.step(0)
    second.sec.step(0.2)
    try:
        assert list(second.fw.kernel) == [parse_network(f"{ATTACKER}/32")]
        # lines written while the agent was down are read after the restart, and only those
        assert second.sec.health().counters["lines_read"] == 2
    finally:
        second.sec.stop()


def test_desired_from_bundle() -> None:
    assert not desired_from_bundle(None).detect
    d = desired_from_bundle(
        bundle(edition="wtp", lock_minutes=5, escalation=False, block_non_whitelisted=False)
    )
    assert d.detect and d.firewall and not d.block
    assert d.settings.lock_minutes == 5 and d.settings.escalation_factor == 1.0
    broken = desired_from_bundle(bundle(short_window_s=100, long_window_s=10))
    assert "long_window_s" in broken.error and broken.settings.short_window_s == 30
    off = desired_from_bundle(bundle(enabled=False, ssh=["10.0.0.1/32"]))
    assert not off.detect and off.firewall and off.ssh_whitelist == ("10.0.0.1/32",)


def test_syslog_log_to_block_alarms_and_saved_offsets(tmp_path: Path) -> None:
    """The whole pipeline on a syslog-format auth log: five failures block, the success that follows
    from the same source is a critical alarm, and the log position is stored on stop."""
    rig = Rig(tmp_path)
    rig.sec.configure(bundle(report_successful_logins=True))
    rig.sec.setup()
    try:
        rig.sec.step(0)
        stamp = time.strftime("%b %e %H:%M:%S")
        rig.write(
            *(
                f"{stamp} web01 sshd[1]: Failed password for root from {ATTACKER} port {4000 + i} ssh2"
                for i in range(5)
            ),
            f"{stamp} web01 sshd[2]: Accepted password for root from {ATTACKER} port 4009 ssh2",
            f"{stamp} web01 CRON[3]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
        )
        rig.sec.step(1.0)
        assert list(rig.fw.kernel) == [parse_network(f"{ATTACKER}/32")]
        assert [a.event_class for a in rig.events if isinstance(a, AlarmEvent)] == [
            "login_0001",
            "login_1001",
            "login_0002",
        ]
        assert [r["user"] for r in rig.records("login")] == ["root"]
        counters = rig.sec.health().counters
        assert counters["login_events"] == 6 and counters["lines_unparsed"] == 0
    finally:
        rig.sec.stop()
    saved = json.loads((tmp_path / "state" / "logtail.json").read_text())
    assert saved["sources"][f"file:{rig.log}"]["offset"] == os.path.getsize(rig.log)


def test_stop_removes_idle_rules_and_keeps_blocks(tmp_path: Path) -> None:
    for name in ("idle", "busy", "ssh"):
        (tmp_path / name).mkdir()
    idle = Rig(tmp_path / "idle")
    idle.sec.configure(bundle())
    idle.sec.setup()
    idle.sec.step(0)
    assert idle.fw.present, "blocking is on: the rules are ready before the first attack"
    idle.sec.stop()
    assert not idle.fw.present, "nothing to enforce: no rules of ours stay behind"

    busy = Rig(tmp_path / "busy")
    busy.sec.configure(bundle())
    busy.sec.setup()
    busy.sec.step(0)
    busy.fail(count=5)
    busy.sec.step(0.5)
    busy.sec.stop()
    assert busy.fw.present and list(busy.fw.kernel) == [parse_network(f"{ATTACKER}/32")]

    whitelist = Rig(tmp_path / "ssh")
    whitelist.sec.configure(bundle(ssh=["10.9.0.3/32"]))
    whitelist.sec.setup()
    whitelist.sec.step(0)
    whitelist.sec.stop()
    assert whitelist.fw.present, "the SSH login IP whitelist stays in force while the agent is down"
