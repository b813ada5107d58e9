"""The firewall backends login security can use: nftables first, iptables + ipset as the fallback."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from hostward.agent.enforcers.blockledger import BlockLedger
from hostward.agent.enforcers.firewall import Firewall, FirewallError, sshd_ports

log = logging.getLogger("hostward.agent.loginsec.component")

FirewallFactory = Callable[[BlockLedger], Firewall | None]


def default_firewall(host_root: Path) -> FirewallFactory:
    """nftables when ``nft`` works here, else iptables + ipset, else None (detect only)."""

    def make(ledger: BlockLedger) -> Firewall | None:
        ports = sshd_ports(host_root / "etc/ssh/sshd_config")
        candidates: list[Firewall] = []
        if shutil.which("nft"):
            from hostward.agent.enforcers.nftables import NftEnforcer

            candidates.append(NftEnforcer(ledger, ssh_ports=ports))
        if shutil.which("iptables") and shutil.which("ipset"):
            from hostward.agent.enforcers.iptables import IptablesEnforcer

            candidates.append(IptablesEnforcer(ledger, ssh_ports=ports))
        for firewall in candidates:
            try:
                firewall.ensure()
                return firewall
            except FirewallError as exc:
                log.warning("%s unusable: %s", firewall.backend, exc)
        return None

    return make


def installed_firewalls(ledger: BlockLedger) -> list[Firewall]:
    """Both backends, unconfigured (for removing whatever an earlier run left behind)."""
    out: list[Firewall] = []
    if shutil.which("nft"):
        from hostward.agent.enforcers.nftables import NftEnforcer

        out.append(NftEnforcer(ledger))
    if shutil.which("iptables") and shutil.which("ipset"):
        from hostward.agent.enforcers.iptables import IptablesEnforcer

        out.append(IptablesEnforcer(ledger))
    return out
