"""Host facts (wire.HostFacts): identity, addresses, OS, kernel, time zone; cheap, sent every heartbeat."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from hostward.agent import AGENT_VERSION
from hostward.wire import HostFacts

MACHINE_ID_PATHS = ("etc/machine-id", "var/lib/dbus/machine-id")
OS_RELEASE_PATHS = ("etc/os-release", "usr/lib/os-release")


def read_machine_id(root: Path = Path("/")) -> str | None:
    """The systemd/D-Bus machine id, or None when the host has none (the caller supplies a fallback)."""
    for rel in MACHINE_ID_PATHS:
        try:
            value = (root / rel).read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue
        if value:
            return value[:128]
    return None


def read_os_release(root: Path = Path("/")) -> dict[str, str]:
    """Key/value pairs of os-release(5) (quotes removed)."""
    for rel in OS_RELEASE_PATHS:
        try:
            text = (root / rel).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        values: dict[str, str] = {}
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, value = line.partition("=")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                value = value[1:-1]
            values[key.strip()] = value.replace('\\"', '"')
        return values
    return {}


def read_timezone(root: Path = Path("/")) -> str:
    """IANA time zone name from /etc/timezone or the /etc/localtime link; "UTC" when unknown."""
    try:
        name = (root / "etc/timezone").read_text(encoding="utf-8").strip().splitlines()[0].strip()
        if name:
            return name[:64]
    except (OSError, IndexError):
        pass
    try:
        target = os.readlink(root / "etc/localtime")
    except OSError:
        return "UTC"
    marker = "zoneinfo/"
    if marker in target:
        return target.split(marker, 1)[1][:64] or "UTC"
    return "UTC"


def utc_offset_minutes(zone: str, now: datetime | None = None) -> int:
    """Current offset of ``zone`` from UTC in minutes (the local offset when the zone is unknown)."""
    moment = now or datetime.now(UTC)
    try:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            offset = moment.astimezone(ZoneInfo(zone)).utcoffset()
        except (ZoneInfoNotFoundError, ValueError):
            offset = None
    except ImportError:  # pragma: no cover - zoneinfo is stdlib since 3.9
        offset = None
    if offset is None:
        return time.localtime().tm_gmtoff // 60
    return int(offset.total_seconds() // 60)


def host_ips() -> list[str]:
    """Addresses of all interfaces except loopback and IPv6 link-local, v4 first."""
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            text = addr.address.split("%", 1)[0]
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if ip.is_loopback or ip.is_unspecified or (ip.version == 6 and ip.is_link_local):
                continue
            if text not in found:
                found.append(text)
    found.sort(key=lambda a: (":" in a, a))
    return found[:256]


def read_hostname(root: Path = Path("/")) -> str:
    if root != Path("/"):
        try:
            name = (root / "etc/hostname").read_text(encoding="utf-8").strip()
            if name:
                return name[:255]
        except OSError:
            pass
    return socket.gethostname()[:255]


def collect_host_facts(root: Path = Path("/"), machine_id_fallback: str = "unknown") -> HostFacts:
    """Everything HostFacts carries, read from ``root`` (the running kernel's values for kernel/arch)."""
    release = read_os_release(root)
    uname = os.uname()
    zone = read_timezone(root)
    return HostFacts(
        hostname=read_hostname(root),
        machine_id=read_machine_id(root) or machine_id_fallback,
        ips=host_ips(),
        os_name=(release.get("NAME") or release.get("ID") or uname.sysname)[:128],
        os_version=(release.get("VERSION_ID") or release.get("VERSION") or "")[:128],
        kernel=uname.release[:128],
        arch=uname.machine[:32],
        agent_version=AGENT_VERSION[:32],
        timezone=zone,
        utc_offset_minutes=utc_offset_minutes(zone),
    )
