"""Sources of the never-block list that the agent finds on its host: its own addresses, the manager's
addresses, and where the administrators' current SSH sessions come from.

An administrator who mistypes a password while logged in must not lock themselves out: the source of
every current session of root or of a member of an administrators' group (``sudo``, ``wheel``,
``admin``) is protected. Sessions come from utmp (``psutil.users()``) and from the sockets of
authenticated sshd processes (their title is ``sshd: USER@pts/N``, ``sshd: USER@notty`` or
``sshd: USER [priv]``); pre-authentication processes are never trusted, so an attacker guessing the
root password is not mistaken for root's session.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from hostward.agent.collectors.sessions import session_sources

log = logging.getLogger(__name__)

ADMIN_GROUPS = ("sudo", "wheel", "admin", "root")
_SSHD_TITLE = re.compile(r"^sshd(?:-session)?: (?P<user>[^\s@\[]+)(?:@\S+| \[priv\])\s*$")


def _host_address(text: str) -> str | None:
    value = text.strip().strip("[]")
    value = value.split("%", 1)[0]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def own_addresses() -> list[str]:
    """Every address of every interface of this host (network namespace), as single addresses."""
    out: list[str] = []
    with contextlib.suppress(OSError):
        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    address = _host_address(a.address)
                    if address and address not in out:
                        out.append(address)
    return out


def manager_addresses(url: str, *, resolve: bool = True) -> list[str]:
    """The manager's addresses from its URL (literal, or resolved through the system resolver)."""
    host = urlsplit(url).hostname or ""
    literal = _host_address(host)
    if literal:
        return [literal]
    if not host or not resolve:
        return []
    out: list[str] = []
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        log.debug("cannot resolve the manager host %s: %s", host, exc)
        return []
    for info in infos:
        address = _host_address(str(info[4][0]))
        if address and address not in out:
            out.append(address)
    return out


def administrators(root: Path = Path("/")) -> set[str]:
    """root plus the members of the administrators' groups in ``etc/group``."""
    admins = {"root"}
    try:
        text = (root / "etc/group").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return admins
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] in ADMIN_GROUPS:
            admins.update(u for u in parts[3].split(",") if u)
    return admins


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _hex_address(text: str) -> str | None:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    if len(raw) == 16:
        # /proc/net/tcp6 prints four host-order 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        return _host_address(str(ipaddress.IPv6Address(words)))
    return None


def tcp_peers(proc_net: Path = Path("/proc/net")) -> dict[int, str]:
    """Socket inode -> remote address of every established TCP connection (this network namespace)."""
    out: dict[int, str] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc_net / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "01":  # 01 = ESTABLISHED
                continue
            with contextlib.suppress(ValueError):
                address = _hex_address(fields[2].split(":")[0])
                if address:
                    out[int(fields[9])] = address
    return out


def sshd_session_sources(admins: Iterable[str]) -> list[str]:
    """Remote addresses of authenticated sshd sessions of ``admins`` (from process titles + sockets)."""
    wanted = set(admins)
    peers: dict[int, str] | None = None
    out: list[str] = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            name = proc.info["name"] or ""
            if not name.startswith("sshd"):
                continue
            title = " ".join(proc.info["cmdline"] or [])
            m = _SSHD_TITLE.match(title)
            if m is None or m.group("user") not in wanted:
                continue
            if peers is None:
                peers = tcp_peers()
            for inode in _socket_inodes(proc.info["pid"]):
                address = peers.get(inode)
                if address and address not in out:
                    out.append(address)
        except (psutil.Error, OSError):
            continue
    return out


def admin_session_sources(root: Path = Path("/")) -> list[str]:
    """Where the administrators' current sessions come from (utmp and live sshd sessions)."""
    admins = administrators(root)
    out = list(session_sources(admins))
    for address in sshd_session_sources(admins):
        if address not in out:
            out.append(address)
    return out
