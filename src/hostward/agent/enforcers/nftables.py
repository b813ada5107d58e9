"""nftables enforcer: our own ``inet hostward`` table, changed only through ``nft -f -`` transactions.

Layout (``render_config``)::

    table inet hostward {
      set block4 / block6      { type ipv4_addr|ipv6_addr; flags interval,timeout; }   blocked sources
      set safe4 / safe6        { flags interval; }   never blocked: whitelist, manager, own, admins
      set sshallow4 / sshallow6 { flags interval; }  SSH login IP whitelist
      set sshports             { type inet_service; }
      chain input   { type filter hook input priority -10; policy accept;
                      iif lo accept; saddr @safe accept; saddr @block drop;
                      [whitelist on:] ssh ports: established,related accept; saddr @sshallow accept;
                                      SYN of a new connection drop }
      chain forward { type filter hook forward priority -10; policy accept;
                      saddr @safe accept; saddr @block drop }
    }

Interval sets hold prefixes (an IPv6 /64); element timeouts make the kernel lift a block on time even
if the agent is gone. ``accept`` in our chain only ends OUR chain: other tables still filter the packet,
so we never open what another firewall closes. The configuration is rewritten in one transaction (flush
our chains and the small sets, add them back), the block sets are never flushed.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from hostward.agent.enforcers.firewall import Add, Firewall, FirewallError, collapse
from hostward.core.net import IPNetwork

TABLE = "hostward"
PRIORITY = -10
SYN_ONLY = "tcp flags & (fin | syn | rst | ack) == syn"


def _element(network: IPNetwork) -> str:
    full = 32 if network.version == 4 else 128
    return str(network.network_address) if network.prefixlen == full else str(network)


def _set_name(network: IPNetwork, base: str) -> str:
    return f"{base}{'4' if network.version == 4 else '6'}"


class NftEnforcer(Firewall):
    """Blocks via nftables (``nft``), see the module docstring."""

    backend = "nftables"

    def __init__(self, *args: Any, table: str = TABLE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not table.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"bad nftables table name {table!r}")
        self.table = table

    # ---- rendering --------------------------------------------------------------------------------------

    def render_config(self) -> str:
        """The configuration transaction: everything except the blocked elements."""
        t = f"inet {self.table}"
        lines = [f"add table {t}"]
        for family, kind in (("4", "ipv4_addr"), ("6", "ipv6_addr")):
            lines.append(f"add set {t} block{family} {{ type {kind}; flags interval,timeout; }}")
            lines.append(f"add set {t} safe{family} {{ type {kind}; flags interval; }}")
            lines.append(f"add set {t} sshallow{family} {{ type {kind}; flags interval; }}")
        lines.append(f"add set {t} sshports {{ type inet_service; }}")
        lines.append(f"add chain {t} input {{ type filter hook input priority {PRIORITY}; policy accept; }}")
        lines.append(
            f"add chain {t} forward {{ type filter hook forward priority {PRIORITY}; policy accept; }}"
        )
        for name in ("input", "forward"):
            lines.append(f"flush chain {t} {name}")
        for name in ("safe4", "safe6", "sshallow4", "sshallow6", "sshports"):
            lines.append(f"flush set {t} {name}")
        safe4, safe6 = collapse(self.safety)
        allow4, allow6 = collapse(self.ssh_allow or [])
        for name, nets in (("safe4", safe4), ("safe6", safe6), ("sshallow4", allow4), ("sshallow6", allow6)):
            if nets:
                lines.append(f"add element {t} {name} {{ {', '.join(_element(n) for n in nets)} }}")
        lines.append(f"add element {t} sshports {{ {', '.join(str(p) for p in self.ssh_ports)} }}")
        rule = f"add rule {t} input"
        lines += [
            f'{rule} iif "lo" accept',
            f"{rule} ip saddr @safe4 accept",
            f"{rule} ip6 saddr @safe6 accept",
            f"{rule} ip saddr @block4 counter drop",
            f"{rule} ip6 saddr @block6 counter drop",
        ]
        if self.ssh_allow is not None:
            lines += [
                f"{rule} tcp dport @sshports ct state established,related accept",
                f"{rule} tcp dport @sshports ip saddr @sshallow4 accept",
                f"{rule} tcp dport @sshports ip6 saddr @sshallow6 accept",
                # only connection attempts (SYN): a session that existed before conntrack was active in
                # this namespace shows up as "new" mid-stream and must survive
                f"{rule} tcp dport @sshports {SYN_ONLY} ct state new counter drop",
            ]
        fwd = f"add rule {t} forward"
        lines += [
            f"{fwd} ip saddr @safe4 accept",
            f"{fwd} ip6 saddr @safe6 accept",
            f"{fwd} ip saddr @block4 counter drop",
            f"{fwd} ip6 saddr @block6 counter drop",
        ]
        return "\n".join(lines) + "\n"

    def render_apply(self, adds: Sequence[Add], removes: Sequence[IPNetwork]) -> str:
        """A batch: removals first (each made to exist, then deleted, so an element that vanished does
        not fail the transaction), then additions; a refresh replaces the element to set its timeout."""
        t = f"inet {self.table}"
        lines: list[str] = []
        for net in removes:
            name, el = _set_name(net, "block"), _element(net)
            lines.append(f"add element {t} {name} {{ {el} timeout 1s }}")
            lines.append(f"delete element {t} {name} {{ {el} }}")
        for add in adds:
            name, el = _set_name(add.network, "block"), _element(add.network)
            if add.refresh:
                lines.append(f"add element {t} {name} {{ {el} timeout 1s }}")
                lines.append(f"delete element {t} {name} {{ {el} }}")
            lines.append(f"add element {t} {name} {{ {el} timeout {add.timeout_s}s }}")
        return "\n".join(lines) + "\n"

    # ---- backend ----------------------------------------------------------------------------------------

    def _nft(self, script: str) -> None:
        self.run(["nft", "-f", "-"], script.encode())

    def _backend_config(self) -> None:
        try:
            self._nft(self.render_config())
        except FirewallError:
            # e.g. a set of ours exists with other flags (an older layout): rebuild the table; the
            # ledger puts the blocks back (verify)
            self._backend_teardown()
            self._nft(self.render_config())
            self.verify()

    def _backend_apply(self, adds: Sequence[Add], removes: Sequence[IPNetwork]) -> None:
        if removes and adds:
            # nft checks a new interval against the set as it was before the transaction, so a prefix
            # replacing the blocks inside it can only be added after they are gone
            self._nft(self.render_apply([], removes))
            self._nft(self.render_apply(adds, []))
        elif adds or removes:
            self._nft(self.render_apply(adds, removes))

    def _backend_delete(self, networks: Sequence[IPNetwork]) -> None:
        t = f"inet {self.table}"
        script = "".join(
            f"delete element {t} {_set_name(n, 'block')} {{ {_element(n)} }}\n" for n in networks
        )
        self._nft(script)

    def _backend_list(self) -> dict[IPNetwork, float | None]:
        out: dict[IPNetwork, float | None] = {}
        for name in ("block4", "block6"):
            text = self.run(["nft", "-j", "list", "set", "inet", self.table, name], None)
            out.update(parse_set_json(text))
        return out

    def _backend_teardown(self) -> None:
        try:
            self.run(["nft", "list", "table", "inet", self.table], None)
        except FirewallError:
            return  # not there
        self.run(["nft", "delete", "table", "inet", self.table], None)


def parse_set_json(text: str) -> dict[IPNetwork, float | None]:
    """Elements of ``nft -j list set`` output -> network -> seconds until expiry (None: no timeout)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FirewallError(f"nft -j: unreadable output: {exc}") from exc
    out: dict[IPNetwork, float | None] = {}
    for item in data.get("nftables", []):
        body = item.get("set") if isinstance(item, dict) else None
        if not isinstance(body, dict):
            continue
        for elem in body.get("elem", []) or []:
            expires: float | None = None
            if isinstance(elem, dict) and "elem" in elem:
                inner = elem["elem"]
                expires = inner.get("expires")
                elem = inner.get("val")
            for net in _networks(elem):
                out[net] = expires
    return out


def _networks(value: Any) -> list[IPNetwork]:
    if isinstance(value, str):
        return [ipaddress.ip_network(value, strict=False)]
    if isinstance(value, dict) and "prefix" in value:
        p = value["prefix"]
        return [ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)]
    if isinstance(value, dict) and "range" in value:
        low, high = (ipaddress.ip_address(v) for v in value["range"])
        return list(ipaddress.summarize_address_range(low, high))
    return []
