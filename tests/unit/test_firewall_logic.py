"""The backend-independent firewall logic (ledger first, refusal, merging, verify), the nft rendering and
parsing and sshd port discovery (the log-to-block pipeline is in test_loginsec_agent.py)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from hostward.agent.detectors.bruteforce import SafetyList
from hostward.agent.enforcers.blockledger import BlockEntry, BlockLedger
from hostward.agent.enforcers.firewall import Add, FirewallError, sshd_ports
from hostward.agent.enforcers.nftables import NftEnforcer, parse_set_json
from tests.fakes.firewall import MemoryFirewall

NOW = 1_764_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fw(tmp_path: Path, clock: Clock) -> MemoryFirewall:
    firewall = MemoryFirewall(BlockLedger(tmp_path), clock=clock)
    firewall.set_safety(SafetyList.build(whitelist=["192.0.2.0/24"]).networks())
    return firewall


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_block_records_first_and_applies_one_batch(fw: MemoryFirewall) -> None:
    result = fw.block(
        [BlockEntry("203.0.113.7", "sshd", NOW + 600), BlockEntry("2001:db8:1:2::9/64", "sshd", NOW + 60)]
    )
    assert result.applied == ["203.0.113.7/32", "2001:db8:1:2::/64"]
    assert len(fw.batches) == 1
    assert {str(r.network) for r in fw.ledger.active(NOW)} == {"203.0.113.7/32", "2001:db8:1:2::/64"}
    assert fw.kernel[net("203.0.113.7/32")] == NOW + 600


def test_protected_and_expired_blocks_are_refused(fw: MemoryFirewall) -> None:
    result = fw.block(
        [BlockEntry("192.0.2.9", "sshd", NOW + 60), BlockEntry("198.51.100.1", "sshd", NOW - 1)]
    )
    assert set(result.refused) == {"192.0.2.9/32", "198.51.100.1/32"}
    assert "protected" in result.refused["192.0.2.9/32"]
    assert fw.kernel == {} and fw.ledger.active(NOW) == []
    assert fw.block([BlockEntry("127.0.0.1", "sshd", NOW + 60)]).refused  # loopback is in the safety list


def test_a_larger_block_replaces_the_ones_it_covers_and_a_smaller_one_is_covered(fw: MemoryFirewall) -> None:
    fw.block([BlockEntry("2001:db8:1:2::1/128", "sshd", NOW + 60)])
    result = fw.block([BlockEntry("2001:db8:1:2::/64", "sshd", NOW + 600)])
    assert result.merged == ["2001:db8:1:2::1/128"] and result.applied == ["2001:db8:1:2::/64"]
    assert list(fw.kernel) == [net("2001:db8:1:2::/64")]
    assert fw.ledger.get("2001:db8:1:2::1/128").status == "merged"  # type: ignore[union-attr]
    covered = fw.block([BlockEntry("2001:db8:1:2::5/128", "sshd", NOW + 900)])
    assert covered.covered == ["2001:db8:1:2::5/128"] and not covered.applied


def test_re_blocking_extends_the_timeout(fw: MemoryFirewall, clock: Clock) -> None:
    fw.block([BlockEntry("203.0.113.7", "sshd", NOW + 60)])
    clock.t += 30
    result = fw.block([BlockEntry("203.0.113.7", "sshd", clock.t + 3600, times_blocked=2)])
    assert result.applied == ["203.0.113.7/32"]
    assert fw.batches[-1][0] == [Add(net("203.0.113.7/32"), 3600, refresh=True)]
    row = fw.ledger.get("203.0.113.7/32")
    assert row is not None and row.times_blocked == 2 and row.first_blocked_at == NOW


def test_a_failed_batch_is_retried_one_by_one_and_verify_repairs_the_rest(fw: MemoryFirewall) -> None:
    fw.fail_next = 2  # the batch and the first single add fail
    result = fw.block(
        [BlockEntry("203.0.113.7", "sshd", NOW + 60), BlockEntry("203.0.113.8", "sshd", NOW + 60)]
    )
    assert list(result.failed) == ["203.0.113.7/32"] and result.applied == ["203.0.113.8/32"]
    assert fw.verify().readded == ["203.0.113.7/32"]
    assert set(fw.kernel) == {net("203.0.113.7/32"), net("203.0.113.8/32")}


def test_verify_re_adds_removes_unwanted_and_expires(fw: MemoryFirewall, clock: Clock) -> None:
    fw.block([BlockEntry("203.0.113.7", "sshd", NOW + 60), BlockEntry("203.0.113.8", "sshd", NOW + 600)])
    del fw.kernel[net("203.0.113.8/32")]  # a reload lost it
    fw.kernel[net("198.51.100.0/24")] = NOW + 999  # someone put an element in our set
    result = fw.verify()
    assert result.readded == ["203.0.113.8/32"] and result.removed == ["198.51.100.0/24"]
    assert fw.kernel[net("203.0.113.8/32")] == NOW + 600  # with the remaining time
    clock.t += 120
    assert fw.verify().expired == ["203.0.113.7/32"]
    fw.teardown()
    assert fw.verify().recreated and set(fw.kernel) == {net("203.0.113.8/32")}


def test_unblock_removes_at_once_and_survives_a_missing_element(fw: MemoryFirewall) -> None:
    fw.block([BlockEntry("203.0.113.7", "sshd", NOW + 60)])
    assert fw.unblock(["203.0.113.7"]) == ["203.0.113.7/32"]
    assert fw.kernel == {} and fw.ledger.get("203.0.113.7/32").status == "unblocked"  # type: ignore[union-attr]
    assert fw.unblock(["203.0.113.7"]) == []
    assert fw.verify().readded == []


def test_ledger_survives_reopening(tmp_path: Path, clock: Clock) -> None:
    first = MemoryFirewall(BlockLedger(tmp_path), clock=clock)
    first.block([BlockEntry("203.0.113.7", "sshd", NOW + 60, reason="5 failures in 30 s", attempts=5)])
    first.ledger.close()
    second = MemoryFirewall(BlockLedger(tmp_path), clock=clock)
    assert second.restore() == 1
    row = second.ledger.get("203.0.113.7/32")
    assert row is not None and (row.reason, row.attempts, row.status) == ("5 failures in 30 s", 5, "active")


def test_nft_rendering_is_idempotent_text_with_collapsed_sets(tmp_path: Path) -> None:
    fw = NftEnforcer(BlockLedger(tmp_path), runner=lambda argv, stdin: "", ssh_ports=[22, 2222])
    fw.safety = [net("10.0.0.0/8"), net("10.1.0.0/16"), net("::1/128")]
    text = fw.render_config()
    assert "add element inet hostward safe4 { 10.0.0.0/8 }" in text
    assert "add element inet hostward safe6 { ::1 }" in text
    assert "sshallow" in text and "@sshports" not in text.split("sshports {")[0]
    assert "dport @sshports" not in text  # whitelist off: no SSH rules
    fw.ssh_allow = [net("198.51.100.0/24")]
    assert "tcp flags & (fin | syn | rst | ack) == syn ct state new counter drop" in fw.render_config()
    batch = fw.render_apply(
        [Add(net("203.0.113.7/32"), 60), Add(net("2001:db8::/64"), 3600, refresh=True)], []
    )
    assert batch.splitlines() == [
        "add element inet hostward block4 { 203.0.113.7 timeout 60s }",
        "add element inet hostward block6 { 2001:db8::/64 timeout 1s }",
        "delete element inet hostward block6 { 2001:db8::/64 }",
        "add element inet hostward block6 { 2001:db8::/64 timeout 3600s }",
    ]


def test_parse_nft_set_json_forms() -> None:
    data = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {
                "set": {
                    "name": "block4",
                    "elem": [
                        {"elem": {"val": "10.1.2.3", "timeout": 90, "expires": 89}},
                        {
                            "elem": {
                                "val": {"prefix": {"addr": "10.2.0.0", "len": 16}},
                                "timeout": 120,
                                "expires": 7,
                            }
                        },
                        {"range": ["10.3.0.0", "10.3.1.255"]},
                        "10.4.0.1",
                    ],
                }
            },
        ]
    }
    parsed = parse_set_json(json.dumps(data))
    assert parsed == {
        net("10.1.2.3/32"): 89,
        net("10.2.0.0/16"): 7,
        net("10.3.0.0/23"): None,
        net("10.4.0.1/32"): None,
    }
    with pytest.raises(FirewallError):
        parse_set_json("not json")


def test_sshd_ports_from_config_and_includes(tmp_path: Path) -> None:
    conf = tmp_path / "sshd_config"
    (tmp_path / "sshd_config.d").mkdir()
    (tmp_path / "sshd_config.d" / "10-port.conf").write_text("Port 2222\n")
    conf.write_text(
        "Include sshd_config.d/*.conf\n#Port 9999\nPort 22 # default\nListenAddress [::1]:2200\n"
        "ListenAddress 10.0.0.1:2201\nPort notaport\nPort 70000\n"
    )
    assert sshd_ports(conf) == [22, 2200, 2201, 2222]
    assert sshd_ports(tmp_path / "missing") == [22]
