"""Reading processes from /proc: identity, uids, command line, stdio and the sockets behind them.

``ProcReader.read(pid)`` returns a ``ProcessInfo`` or None when the process has gone (exited between
the event and the read). Sockets are resolved through ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}`` of the
process's own network namespace, keyed by socket inode.
"""

from __future__ import annotations

import os
import socket
import time
from typing import NamedTuple

from hostward.agent.detectors.procmodel import ParentInfo, ProcessInfo, SocketInfo

PARENT_DEPTH = 6
MAX_SOCKET_FDS = 64


def _read(path: str, limit: int = 65536) -> bytes | None:
    """Up to ``limit`` bytes of a /proc file (seq files return a page or so per read: loop)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, limit)
        if not data or len(data) >= limit:
            return data
        parts = [data]
        got = len(data)
        while got < limit:
            chunk = os.read(fd, limit - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
    return ip, int(port, 16)


def parse_proc_net(text: str, proto: str) -> dict[int, SocketInfo]:
    """Sockets by inode from /proc/net/tcp, tcp6, udp or udp6 text."""
    out: dict[int, SocketInfo] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            inode = int(parts[9])
            lip, lport = _addr(parts[1])
            rip, rport = _addr(parts[2])
        except ValueError:
            continue
        state = _TCP_STATES.get(parts[3].upper(), parts[3])
        if proto == "udp":
            state = "ESTABLISHED" if parts[3] == "01" else "UNCONN"
        if inode:
            out[inode] = SocketInfo(inode, proto, lip, lport, rip, rport, state)
    return out


class SocketTable:
    """inode -> SocketInfo per network namespace, re-read when an inode is not found (rate-limited)."""

    def __init__(self, proc_root: str = "/proc", min_refresh_s: float = 0.02) -> None:
        self.proc_root = proc_root
        self.min_refresh_s = min_refresh_s
        self._tables: dict[str, tuple[float, dict[int, SocketInfo]]] = {}

    def _load(self, pid: int) -> dict[int, SocketInfo]:
        table: dict[int, SocketInfo] = {}
        for name, proto in (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp")):
            raw = _read(f"{self.proc_root}/{pid}/net/{name}", 8 * 1024 * 1024)
            if raw:
                table.update(parse_proc_net(raw.decode("ascii", "replace"), proto))
        return table

    def lookup(self, pid: int, inodes: set[int]) -> dict[int, SocketInfo]:
        ns = _readlink(f"{self.proc_root}/{pid}/ns/net") or "?"
        now = time.monotonic()
        cached = self._tables.get(ns)
        if cached is None or (not inodes <= cached[1].keys() and now - cached[0] >= self.min_refresh_s):
            cached = (now, self._load(pid))
            self._tables[ns] = cached
            if len(self._tables) > 64:
                self._tables = {ns: cached}
        return {i: cached[1][i] for i in inodes if i in cached[1]}


def _socket_inode(link: str) -> int | None:
    if link.startswith("socket:[") and link.endswith("]"):
        try:
            return int(link[8:-1])
        except ValueError:
            return None
    return None


class _Stat(NamedTuple):
    comm: str
    ppid: int
    start_ticks: int


def _parse_stat(raw: bytes) -> _Stat | None:
    try:
        open_paren = raw.index(b"(")
        close = raw.rindex(b")")
        rest = raw[close + 2 :].split()
        return _Stat(raw[open_paren + 1 : close].decode("utf-8", "replace"), int(rest[1]), int(rest[19]))
    except (ValueError, IndexError):
        return None


def _parse_ids(raw: bytes) -> tuple[list[int], list[int]] | None:
    uids: list[int] | None = None
    gids: list[int] | None = None
    for line in raw.split(b"\n"):
        if line.startswith(b"Uid:"):
            uids = [int(x) for x in line.split()[1:5]]
        elif line.startswith(b"Gid:"):
            gids = [int(x) for x in line.split()[1:5]]
            break
    if uids is None or gids is None or len(uids) < 3 or len(gids) < 2:
        return None
    return uids, gids


class ProcReader:
    """Reads one process (and its parents) from /proc; returns None when the process has gone."""

    def __init__(self, proc_root: str = "/proc", sockets: SocketTable | None = None) -> None:
        self.proc_root = proc_root
        self.sockets = sockets or SocketTable(proc_root)
        self._parents: dict[tuple[int, int], ParentInfo] = {}

    def stat(self, pid: int) -> _Stat | None:
        raw = _read(f"{self.proc_root}/{pid}/stat", 4096)
        return _parse_stat(raw) if raw else None

    def euid(self, pid: int) -> int:
        """Effective uid from the owner of /proc/<pid> (one stat, no read); -1 when gone."""
        try:
            return os.stat(f"{self.proc_root}/{pid}").st_uid
        except OSError:
            return -1

    def ids(self, pid: int) -> tuple[list[int], list[int]] | None:
        raw = _read(f"{self.proc_root}/{pid}/status", 16384)
        return _parse_ids(raw) if raw else None

    def _cmdline(self, pid: int) -> tuple[str, ...]:
        raw = _read(f"{self.proc_root}/{pid}/cmdline", 65536) or b""
        return tuple(a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")) if raw else ()

    def _parent(self, pid: int) -> tuple[ParentInfo, int] | None:
        st = self.stat(pid)
        if st is None:
            return None
        key = (pid, st.start_ticks)
        info = self._parents.get(key)
        if info is None:
            ids = self.ids(pid)
            ruid, euid = (ids[0][0], ids[0][1]) if ids else (-1, -1)
            exe = _readlink(f"{self.proc_root}/{pid}/exe")
            info = ParentInfo(pid, exe, " ".join(self._cmdline(pid))[:1024], ruid, euid)
            if len(self._parents) > 4096:
                self._parents.clear()
            self._parents[key] = info
        return info, st.ppid

    def read(self, pid: int, event: str, *, previous_exe: str = "", event_ns: int = 0) -> ProcessInfo | None:
        base = f"{self.proc_root}/{pid}"
        st = self.stat(pid)
        if st is None:
            return None
        ids = self.ids(pid)
        if ids is None:
            return None
        uids, gids = ids
        exe = _readlink(f"{base}/exe")
        cmdline = self._cmdline(pid)
        cwd = _readlink(f"{base}/cwd")
        stdio = {fd: _readlink(f"{base}/fd/{fd}") for fd in (0, 1, 2)}
        sockets: dict[int, SocketInfo] = {}
        stdio_inodes = {fd: i for fd, link in stdio.items() if (i := _socket_inode(link)) is not None}
        if stdio_inodes:
            fd_inodes = dict(stdio_inodes)
            try:
                for name in os.listdir(f"{base}/fd")[: MAX_SOCKET_FDS * 4]:
                    fd = int(name)
                    if fd in fd_inodes or len(fd_inodes) >= MAX_SOCKET_FDS:
                        continue
                    inode = _socket_inode(_readlink(f"{base}/fd/{name}"))
                    if inode is not None:
                        fd_inodes[fd] = inode
            except (OSError, ValueError):
                pass
            found = self.sockets.lookup(pid, set(fd_inodes.values()))
            sockets = {fd: found[i] for fd, i in fd_inodes.items() if i in found}
        parents: list[ParentInfo] = []
        ppid = st.ppid
        seen = {pid}
        while ppid > 0 and ppid not in seen and len(parents) < PARENT_DEPTH:
            seen.add(ppid)
            got = self._parent(ppid)
            if got is None:
                break
            parents.append(got[0])
            ppid = got[1]
        return ProcessInfo(
            pid=pid,
            ppid=st.ppid,
            exe=exe,
            cmdline=cmdline,
            cwd=cwd,
            ruid=uids[0],
            euid=uids[1],
            suid=uids[2],
            rgid=gids[0],
            egid=gids[1],
            start_ticks=st.start_ticks,
            comm=st.comm,
            event=event,
            parents=tuple(parents),
            stdio=stdio,
            sockets=sockets,
            previous_exe=previous_exe,
            event_ns=event_ns or time.monotonic_ns(),
        )

    def pids(self) -> list[int]:
        try:
            return [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]
        except OSError:
            return []
