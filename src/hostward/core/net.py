"""IP and CIDR helpers shared by the manager (validation) and the agent (enforcement)."""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_network(text: str) -> IPNetwork:
    """Parse an address or CIDR (v4 or v6); raises ValueError with the offending text."""
    value = text.strip()
    if not value:
        raise ValueError("empty address")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"not an IP address or CIDR: {value!r}") from exc


def parse_address(text: str) -> IPAddress:
    """Parse one address; IPv4-mapped IPv6 (``::ffff:1.2.3.4``) becomes the IPv4 address."""
    addr = ipaddress.ip_address(text.strip())
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_private(addr: IPAddress) -> bool:
    """True for private, loopback and link-local ranges (shown as "intranet")."""
    return addr.is_private or addr.is_loopback or addr.is_link_local


def aggregate_source(addr: IPAddress, v6_prefix: int = 64) -> IPNetwork:
    """The network a source is counted and blocked under: /32 for IPv4, /v6_prefix for IPv6."""
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.ip_network(f"{addr}/32")
    return ipaddress.ip_network(f"{addr}/{v6_prefix}", strict=False)


def in_any(addr: IPAddress, networks: list[IPNetwork]) -> bool:
    """True when ``addr`` lies inside one of ``networks`` (families are compared separately)."""
    return any(addr.version == net.version and addr in net for net in networks)
