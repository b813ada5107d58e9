"""Parsing operator-typed address lists: single addresses, CIDRs and ranges, IPv4 and IPv6.

Every refusal is an ``Invalid`` (HTTP 422) that names the offending entry, so the API, the CLI and the
console all tell the operator which one of their entries is wrong.
"""

from __future__ import annotations

import ipaddress
import re

from hostward.core.errors import Invalid
from hostward.core.net import IPNetwork, parse_address, parse_network

MAX_RANGE_NETWORKS = 32
_SPLIT = re.compile(r"[\s,;]+")


def split_items(text: str | list[str]) -> list[str]:
    """Entries of a comma/space/newline-separated text (or a list whose items may hold several)."""
    parts = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for part in parts:
        out.extend(p for p in _SPLIT.split(str(part)) if p)
    return out


def parse_item(item: str, what: str) -> list[IPNetwork]:
    """The networks of one entry: ``1.2.3.4``, ``1.2.3.0/24``, ``2001:db8::/64`` or ``10.0.0.1-10.0.0.20``."""
    text = item.strip()
    if not text or len(text) > 100:
        raise Invalid(f"{what} entry {text[:100]!r}: not an IP address, CIDR or range")
    if "-" in text:
        low_text, _, high_text = text.partition("-")
        try:
            low, high = parse_address(low_text), parse_address(high_text)
        except ValueError:
            raise Invalid(f"{what} entry {text!r}: not an IP address, CIDR or range") from None
        if low.version != high.version or int(low) > int(high):
            raise Invalid(
                f"{what} entry {text!r}: a range goes from a lower to a higher address of one family"
            )
        networks: list[IPNetwork] = list(ipaddress.summarize_address_range(low, high))
        if len(networks) > MAX_RANGE_NETWORKS:
            raise Invalid(f"{what} entry {text!r}: range too fragmented; give CIDR blocks instead")
        return networks
    try:
        network = parse_network(text)
    except ValueError:
        raise Invalid(f"{what} entry {text!r}: not an IP address, CIDR or range") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.ip_network(f"{mapped}/{max(0, network.prefixlen - 96)}", strict=False)
    return [network]


def parse_items(items: list[str], what: str) -> list[IPNetwork]:
    """Every network of ``items`` in order, duplicates dropped."""
    seen: dict[str, IPNetwork] = {}
    for item in items:
        for network in parse_item(item, what):
            seen.setdefault(str(network), network)
    return list(seen.values())


def display(network: str | IPNetwork) -> str:
    """A single address without its /32 or /128; prefixes as CIDR."""
    net = ipaddress.ip_network(str(network), strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
