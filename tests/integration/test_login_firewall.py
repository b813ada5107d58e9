"""Real nftables (and iptables+ipset) blocking in throw-away network namespaces."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hostward.agent.enforcers.blockledger import BlockEntry, BlockLedger
from hostward.agent.enforcers.firewall import Firewall
from hostward.agent.enforcers.iptables import IptablesEnforcer
from hostward.agent.enforcers.nftables import NftEnforcer
from tests.conftest import need
from tests.integration.netlab import NetLab, netlab

pytestmark = [pytest.mark.root, pytest.mark.netns]

SSH_PORT = 2222
OTHER_PORT = 8080


@pytest.fixture
def lab() -> Iterator[NetLab]:
    need("netns")
    need("nft")
    with netlab(ports=(SSH_PORT, OTHER_PORT)) as value:
        yield value


def nft_enforcer(lab: NetLab, state: Path) -> NftEnforcer:
    fw = NftEnforcer(BlockLedger(state), netns=lab.srv, ssh_ports=[SSH_PORT])
    fw.ensure()
    fw.set_safety(["127.0.0.0/8", "::1/128"])
    return fw


def wait_for(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` held; fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout} s")


def block(fw: Firewall, network: str, seconds: float = 600) -> None:
    result = fw.block([BlockEntry(network, "sshd", time.time() + seconds, reason="test")])
    assert not result.failed and not result.refused, result


def test_blocked_source_times_out_while_another_address_connects_and_unblock_is_fast(
    lab: NetLab, tmp_path: Path
) -> None:
    fw = nft_enforcer(lab, tmp_path)
    attacker, other = lab.clients4[0], lab.clients4[1]
    assert lab.connect(attacker) == "ok"
    block(fw, f"{attacker}/32")
    assert lab.connect(attacker) == "timeout"
    assert lab.connect(attacker, port=SSH_PORT) == "timeout"  # every port
    assert lab.connect(other) == "ok"
    t0 = time.monotonic()
    assert fw.unblock([attacker]) == [f"{attacker}/32"]
    elapsed = wait_for(lambda: lab.connect(attacker, timeout=0.5) == "ok", 2.0)
    assert time.monotonic() - t0 < 2.0, elapsed
    assert fw.ledger.get(f"{attacker}/32").status == "unblocked"  # type: ignore[union-attr]
    fw.teardown()
    assert lab.nft("list", "ruleset").strip() == ""


def test_an_ipv6_64_block_covers_another_address_of_the_prefix(lab: NetLab, tmp_path: Path) -> None:
    fw = nft_enforcer(lab, tmp_path)
    attacker, same_64, other_64 = lab.clients6
    assert lab.connect(same_64) == "ok"
    block(fw, "fd00:77:0:1::/64")
    assert lab.connect(attacker) == "timeout"
    assert lab.connect(same_64) == "timeout"
    assert lab.connect(other_64) == "ok"
    fw.teardown()


def test_verify_re_adds_an_element_deleted_behind_our_back(lab: NetLab, tmp_path: Path) -> None:
    fw = nft_enforcer(lab, tmp_path)
    attacker = lab.clients4[0]
    block(fw, attacker)
    lab.nft("delete", "element", "inet", "hostward", "block4", f"{{ {attacker} }}")
    assert lab.connect(attacker) == "ok"
    result = fw.verify()
    assert result.readded == [f"{attacker}/32"]
    assert lab.connect(attacker) == "timeout"
    # a flushed ruleset (firewall reload) is rebuilt, blocks included
    lab.nft("flush", "ruleset")
    assert lab.connect(attacker) == "ok"
    result = fw.verify()
    assert result.recreated and result.readded == [f"{attacker}/32"]
    assert lab.connect(attacker) == "timeout"
    fw.teardown()


def test_blocks_survive_a_restart_through_the_ledger(lab: NetLab, tmp_path: Path) -> None:
    fw = nft_enforcer(lab, tmp_path)
    attacker = lab.clients4[0]
    block(fw, attacker)
    fw.teardown()  # as if the table went away while the agent was stopped
    fw.ledger.close()
    again = NftEnforcer(BlockLedger(tmp_path), netns=lab.srv, ssh_ports=[SSH_PORT])
    assert again.restore() == 1
    assert lab.connect(attacker) == "timeout"
    left = again.listed()[f"{attacker}/32"]
    assert left is not None and 500 < left <= 600
    again.teardown()


def test_element_timeouts_lift_the_block_in_the_kernel(lab: NetLab, tmp_path: Path) -> None:
    fw = nft_enforcer(lab, tmp_path)
    attacker = lab.clients4[0]
    block(fw, attacker, seconds=2)
    assert lab.connect(attacker, timeout=0.5) == "timeout"
    wait_for(lambda: lab.connect(attacker, timeout=0.5) == "ok", 6.0)
    assert fw.verify().expired == [f"{attacker}/32"]
    fw.teardown()


def test_protected_addresses_are_refused(lab: NetLab, tmp_path: Path) -> None:
    fw = nft_enforcer(lab, tmp_path)
    fw.set_safety(["127.0.0.0/8", "::1/128", f"{lab.clients4[1]}/32"])
    result = fw.block([BlockEntry("10.77.0.0/24", "sshd", time.time() + 60)])
    assert "10.77.0.0/24" in result.refused and not result.applied
    assert lab.connect(lab.clients4[0]) == "ok"
    fw.teardown()


def test_ssh_whitelist_drops_new_connections_but_established_ones_survive(
    lab: NetLab, tmp_path: Path
) -> None:
    fw = nft_enforcer(lab, tmp_path)
    listed, outsider = lab.clients4[0], lab.clients4[1]
    assert lab.open("before", outsider, SSH_PORT) == "ok"
    t0 = time.monotonic()
    fw.set_ssh_whitelist([f"{listed}/32"])
    assert time.monotonic() - t0 < 2.0
    assert lab.connect(outsider, port=SSH_PORT) == "timeout"
    assert lab.connect(listed, port=SSH_PORT) == "ok"
    assert lab.connect(outsider, port=OTHER_PORT) == "ok"  # other services are not affected
    assert lab.echo("before") == {"result": "ok", "data": "ping"}  # the session opened before survives
    assert lab.connect(lab.clients6[0], port=SSH_PORT) == "timeout"  # IPv6 too
    fw.set_safety(["127.0.0.0/8", "::1/128", f"{outsider}/32"])  # the safety list always gets in
    assert lab.connect(outsider, port=SSH_PORT) == "ok"
    fw.set_ssh_whitelist(None)  # clearing it takes effect at once
    assert lab.connect(lab.clients4[2], port=SSH_PORT) == "ok"
    fw.teardown()


def test_iptables_ipset_fallback_blocks_verifies_and_unblocks(lab: NetLab, tmp_path: Path) -> None:
    need("root")
    fw = IptablesEnforcer(BlockLedger(tmp_path), netns=lab.srv, ssh_ports=[SSH_PORT])
    try:
        fw.ensure()
        fw.set_safety(["127.0.0.0/8", "::1/128"])
        attacker, other = lab.clients4[0], lab.clients4[1]
        block(fw, attacker)
        block(fw, "fd00:77:0:1::/64")
        assert lab.connect(attacker) == "timeout"
        assert lab.connect(lab.clients6[1]) == "timeout"
        assert lab.connect(other) == "ok"
        assert lab.connect(lab.clients6[2]) == "ok"
        from tests.integration.netlab import sh

        sh("ip", "netns", "exec", lab.srv, "ipset", "del", "hostward-block4", attacker)
        assert fw.verify().readded == [f"{attacker}/32"]
        assert lab.connect(attacker) == "timeout"
        assert lab.open("before", lab.clients4[2], SSH_PORT) == "ok"
        fw.set_ssh_whitelist([f"{other}/32"])
        assert lab.connect(lab.clients4[2], port=SSH_PORT) == "timeout"
        assert lab.echo("before") == {"result": "ok", "data": "ping"}
        assert lab.connect(other, port=SSH_PORT) == "ok"
        assert fw.unblock([attacker]) == [f"{attacker}/32"]
        assert lab.connect(attacker, port=OTHER_PORT) == "ok"
    finally:
        fw.teardown()
    out = sh("ip", "netns", "exec", lab.srv, "ipset", "list", "-n").stdout
    assert "hostward" not in out
