"""Asset fingerprints (wire.AssetSnapshot): accounts, listening ports, processes, packages, auto-start
items and kernel modules.

Each category is collected on its own: a failure lands in ``snapshot.errors[category]`` and the other
categories are still collected. File-based categories read below ``root`` so tests can use prepared
trees (and a containerised agent can read the host at ``/host``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from hostward.agent.collectors.autostart import collect_autostart
from hostward.agent.collectors.packages import collect_packages
from hostward.wire import Account, AssetSnapshot, KernelModule, ListeningPort, ProcessInfo

CATEGORIES = ("accounts", "ports", "processes", "packages", "autostart", "kernel_modules")
NO_LOGIN_SHELLS = ("nologin", "false")
MAX_CMDLINE = 2048

Checkpoint = Callable[[str, int], None]


# ---- accounts ---------------------------------------------------------------------------------------


def _colon_lines(path: Path, fields: int) -> Iterable[list[str]]:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.startswith(("#", "+", "-")):
            continue  # comments and NIS compat entries are not local accounts
        parts = line.split(":")
        if len(parts) >= fields:
            yield parts


def login_allowed(shell: str) -> bool:
    """An empty shell means /bin/sh (passwd(5)); nologin and false refuse interactive logins."""
    base = shell.rstrip("/").rsplit("/", 1)[-1]
    return base not in NO_LOGIN_SHELLS


def collect_accounts(root: Path = Path("/")) -> list[Account]:
    """Local accounts from /etc/passwd with group memberships from /etc/group."""
    group_names: dict[int, str] = {}
    members: dict[str, list[str]] = {}
    group_path = root / "etc/group"
    if group_path.exists():
        for group, _pw, group_gid, user_list, *_ in _colon_lines(group_path, 4):
            if group_gid.strip().isdigit():
                group_names.setdefault(int(group_gid), group)
            for user in filter(None, (u.strip() for u in user_list.split(","))):
                members.setdefault(user, []).append(group)
    accounts: list[Account] = []
    for parts in _colon_lines(root / "etc/passwd", 7):
        name, _pw, uid_s, gid_s, _gecos, home, shell = parts[:7]
        try:
            uid, gid = int(uid_s), int(gid_s)
        except ValueError:
            continue
        groups: list[str] = []
        primary = group_names.get(gid)
        if primary:
            groups.append(primary)
        groups += [g for g in members.get(name, []) if g not in groups]
        accounts.append(
            Account(
                name=name[:256],
                uid=uid,
                gid=gid,
                home=home,
                shell=shell,
                groups=groups,
                login_allowed=login_allowed(shell),
                root=uid == 0,
            )
        )
    return accounts


# ---- listening ports --------------------------------------------------------------------------------


def _protocol(family: int, kind: int) -> str:
    base = "tcp" if kind == socket.SOCK_STREAM else "udp"
    return base + ("6" if family == socket.AF_INET6 else "")


def collect_ports() -> list[ListeningPort]:
    """TCP sockets in LISTEN and unconnected UDP sockets, with the owning process when visible."""
    owners: dict[int, tuple[str, str]] = {}

    def owner(pid: int | None) -> tuple[str, str]:
        if pid is None:
            return "", ""
        if pid not in owners:
            name = exe = ""
            try:
                proc = psutil.Process(pid)
                name = proc.name()
                exe = proc.exe()
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
                pass
            owners[pid] = (name, exe)
        return owners[pid]

    seen: set[tuple[str, str, int, int | None]] = set()
    ports: list[ListeningPort] = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.type == socket.SOCK_STREAM:
            if conn.status != psutil.CONN_LISTEN:
                continue
        elif conn.type == socket.SOCK_DGRAM:
            if conn.raddr:
                continue
        else:
            continue
        if not conn.laddr:
            continue
        proto = _protocol(conn.family, conn.type)
        key = (proto, conn.laddr.ip, conn.laddr.port, conn.pid)
        if key in seen:
            continue
        seen.add(key)
        name, exe = owner(conn.pid)
        ports.append(
            ListeningPort(
                protocol=proto,
                address=conn.laddr.ip,
                port=conn.laddr.port,
                pid=conn.pid,
                process=name,
                exe=exe,
            )
        )
    ports.sort(key=lambda p: (p.protocol, p.port, p.address))
    return ports


# ---- processes --------------------------------------------------------------------------------------


def collect_processes() -> list[ProcessInfo]:
    processes: list[ProcessInfo] = []
    attrs = ["pid", "ppid", "username", "exe", "cmdline", "create_time"]
    for proc in psutil.process_iter(attrs, ad_value=None):
        info = proc.info
        cmdline = " ".join(info.get("cmdline") or [])[:MAX_CMDLINE]
        created = info.get("create_time")
        processes.append(
            ProcessInfo(
                pid=info["pid"],
                ppid=info.get("ppid") or 0,
                user=info.get("username") or "",
                exe=info.get("exe") or "",
                cmdline=cmdline,
                started_at=datetime.fromtimestamp(created, UTC) if created else None,
            )
        )
    return processes


# ---- kernel modules ---------------------------------------------------------------------------------


def parse_proc_modules(text: str) -> list[KernelModule]:
    """``name size refcount deps state offset`` lines of /proc/modules."""
    modules: list[KernelModule] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        used_by = [d for d in parts[3].split(",") if d and d != "-"]
        size = int(parts[1]) if parts[1].isdigit() else 0
        modules.append(KernelModule(name=parts[0], size=size, used_by=used_by))
    return modules


def collect_kernel_modules(root: Path = Path("/")) -> list[KernelModule]:
    path = root / "proc/modules"
    if not path.exists():
        raise FileNotFoundError(f"{path} not present (no module support, or a container)")
    return parse_proc_modules(path.read_text(encoding="utf-8", errors="replace"))


# ---- the snapshot -----------------------------------------------------------------------------------


class AssetCollector:
    """Collects an AssetSnapshot; ``checkpoint(category, index)`` runs before each category.

    The checkpoint is where the runtime reports progress, throttles under CPU pressure and cancels
    (by raising); exceptions from it propagate, exceptions from a category are recorded.
    """

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def collect_category(self, category: str) -> list[Any]:
        if category == "accounts":
            return collect_accounts(self.root)
        if category == "ports":
            return collect_ports()
        if category == "processes":
            return collect_processes()
        if category == "packages":
            return collect_packages(self.root)
        if category == "autostart":
            return collect_autostart(self.root)
        if category == "kernel_modules":
            return collect_kernel_modules(self.root)
        raise ValueError(f"unknown asset category {category!r}")

    def collect(
        self,
        now: datetime,
        categories: Iterable[str] = CATEGORIES,
        checkpoint: Checkpoint | None = None,
    ) -> AssetSnapshot:
        snapshot = AssetSnapshot(collected_at=now)
        for index, category in enumerate(categories):
            if checkpoint is not None:
                checkpoint(category, index)
            try:
                setattr(snapshot, category, self.collect_category(category))
            except Exception as exc:
                snapshot.errors[category] = f"{type(exc).__name__}: {exc}"[:1000]
        return snapshot
