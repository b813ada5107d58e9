"""iptables + ipset enforcer: the same interface as the nftables one, for hosts without ``nft``.

ipsets ``hostward-block4/6`` (hash:net with timeouts), ``hostward-safe4/6`` and ``hostward-ssh4/6``;
chains ``HOSTWARD`` (jumped to first from INPUT) and ``HOSTWARD-FWD`` (from FORWARD) in the filter
table of iptables and ip6tables. Both RETURN for the safety list and DROP blocked sources; the input
chain also RETURNs for loopback and, when the SSH login IP whitelist is on, drops NEW connections to
sshd's ports from other sources (established ones RETURN first). Elements are added in batches with
``ipset restore -exist``.

ipset timeouts stop at 2,147,483 s (24.8 days); longer blocks are put in with that maximum and
``verify()`` puts them back with the remaining time when the kernel drops them early.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from hostward.agent.enforcers.firewall import Add, Firewall, FirewallError, collapse
from hostward.core.net import IPNetwork

CHAIN = "HOSTWARD"
FORWARD_CHAIN = "HOSTWARD-FWD"
PREFIX = "hostward"
MAX_TIMEOUT_S = 2_147_483
HOOKS = {"INPUT": CHAIN, "FORWARD": FORWARD_CHAIN}


def _family(network: IPNetwork) -> str:
    return "4" if network.version == 4 else "6"


class IptablesEnforcer(Firewall):
    """Blocks via ipset + iptables/ip6tables, see the module docstring."""

    backend = "iptables"

    def _set(self, kind: str, family: str) -> str:
        return f"{PREFIX}-{kind}{family}"

    # ---- rendering --------------------------------------------------------------------------------------

    def render_sets(self) -> str:
        """``ipset restore`` input: create missing sets, refill the safety and whitelist sets."""
        lines = []
        for family, inet in (("4", "inet"), ("6", "inet6")):
            lines.append(
                f"create {self._set('block', family)} hash:net family {inet} timeout 0 maxelem 262144"
            )
            for kind in ("safe", "ssh"):
                lines.append(f"create {self._set(kind, family)} hash:net family {inet} maxelem 65536")
                lines.append(f"flush {self._set(kind, family)}")
        safe4, safe6 = collapse(self.safety)
        allow4, allow6 = collapse(self.ssh_allow or [])
        for kind, family, nets in (
            ("safe", "4", safe4),
            ("safe", "6", safe6),
            ("ssh", "4", allow4),
            ("ssh", "6", allow6),
        ):
            lines += [f"add {self._set(kind, family)} {n}" for n in nets]
        return "\n".join(lines) + "\n"

    def render_rules(self, family: str, chain: str = CHAIN) -> list[list[str]]:
        """The rules of one of our chains for one family, as argument lists (after ``-A CHAIN``)."""
        rules = [["-i", "lo", "-j", "RETURN"]] if chain == CHAIN else []
        rules += [
            ["-m", "set", "--match-set", self._set("safe", family), "src", "-j", "RETURN"],
            ["-m", "set", "--match-set", self._set("block", family), "src", "-j", "DROP"],
        ]
        if self.ssh_allow is not None and chain == CHAIN:
            ports = ",".join(str(p) for p in self.ssh_ports)
            ssh = ["-p", "tcp", "-m", "multiport", "--dports", ports]
            rules += [
                [*ssh, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
                [*ssh, "-m", "set", "--match-set", self._set("ssh", family), "src", "-j", "RETURN"],
                [*ssh, "--syn", "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"],
            ]
        return rules

    # ---- backend ----------------------------------------------------------------------------------------

    def _tables(self, family: str) -> str:
        return "iptables" if family == "4" else "ip6tables"

    def _backend_config(self) -> None:
        self.run(["ipset", "restore", "-exist"], self.render_sets().encode())
        for family in ("4", "6"):
            tool = self._tables(family)
            for hook, chain in HOOKS.items():
                try:
                    self.run([tool, "-w", "-n", "-L", chain], None)
                except FirewallError:
                    self.run([tool, "-w", "-N", chain], None)
                self.run([tool, "-w", "-F", chain], None)
                for rule in self.render_rules(family, chain):
                    self.run([tool, "-w", "-A", chain, *rule], None)
                try:
                    self.run([tool, "-w", "-C", hook, "-j", chain], None)
                except FirewallError:
                    self.run([tool, "-w", "-I", hook, "1", "-j", chain], None)

    def _backend_apply(self, adds: Sequence[Add], removes: Sequence[IPNetwork]) -> None:
        lines = [f"del {self._set('block', _family(n))} {n}" for n in removes]
        for add in adds:
            name = self._set("block", _family(add.network))
            if add.refresh:
                lines.append(f"del {name} {add.network}")
            lines.append(f"add {name} {add.network} timeout {min(add.timeout_s, MAX_TIMEOUT_S)}")
        if lines:
            self.run(["ipset", "restore", "-exist"], ("\n".join(lines) + "\n").encode())

    def _backend_delete(self, networks: Sequence[IPNetwork]) -> None:
        self._backend_apply([], networks)

    def _backend_list(self) -> dict[IPNetwork, float | None]:
        out: dict[IPNetwork, float | None] = {}
        for family in ("4", "6"):
            text = self.run(["ipset", "save", self._set("block", family)], None)
            for line in text.splitlines():
                words = line.split()
                if len(words) < 3 or words[0] != "add":
                    continue
                try:
                    net = ipaddress.ip_network(words[2], strict=False)
                except ValueError:
                    continue
                left: float | None = None
                if "timeout" in words:
                    i = words.index("timeout")
                    if i + 1 < len(words) and words[i + 1].isdigit():
                        left = float(words[i + 1])
                out[net] = left
        return out

    def _backend_teardown(self) -> None:
        for family in ("4", "6"):
            tool = self._tables(family)
            for hook, chain in HOOKS.items():
                for _ in range(32):  # every jump we (or an older run) inserted
                    try:
                        self.run([tool, "-w", "-D", hook, "-j", chain], None)
                    except FirewallError:
                        break
                for args in (["-F", chain], ["-X", chain]):
                    try:
                        self.run([tool, "-w", *args], None)
                    except FirewallError:
                        pass
        for family in ("4", "6"):
            for kind in ("block", "safe", "ssh"):
                try:
                    self.run(["ipset", "destroy", self._set(kind, family)], None)
                except FirewallError:
                    pass
