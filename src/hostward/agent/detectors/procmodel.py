"""What the process collector observes, as plain data for the process detectors.

Observation kinds (``Observation.kind`` -> ``data``):

- ``process_exec``  ``ProcessInfo``: a program was executed (proc connector exec event, a new process
  seen by /proc polling, or a running process listed at start: ``event`` says which)
- ``process_uid``   ``ProcessInfo``: a process changed its uids (``event == "uid"``)
- ``process_exit``  ``ProcessExit``
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

PROCESS_EXEC = "process_exec"
PROCESS_UID = "process_uid"
PROCESS_EXIT = "process_exit"

LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")


@dataclass(frozen=True)
class SocketInfo:
    """One inet socket from /proc/<pid>/net/{tcp,tcp6,udp,udp6}."""

    inode: int
    proto: str  # tcp | udp
    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    state: str  # ESTABLISHED, LISTEN, ... (UDP: "UNCONN" / "ESTABLISHED" when connected)

    @property
    def connected(self) -> bool:
        return self.remote_port != 0 and self.remote_ip not in ("0.0.0.0", "::")

    @property
    def remote(self) -> str:
        host = f"[{self.remote_ip}]" if ":" in self.remote_ip else self.remote_ip
        return f"{host}:{self.remote_port}"

    @property
    def local(self) -> str:
        host = f"[{self.local_ip}]" if ":" in self.local_ip else self.local_ip
        return f"{host}:{self.local_port}"

    @property
    def loopback(self) -> bool:
        return self.remote_ip.startswith(LOOPBACK_PREFIXES)


@dataclass(frozen=True)
class ParentInfo:
    pid: int
    exe: str
    cmdline: str
    ruid: int
    euid: int


@dataclass(frozen=True)
class ProcessInfo:
    """A process as read from /proc right after the event."""

    pid: int
    ppid: int
    exe: str
    cmdline: tuple[str, ...]
    cwd: str
    ruid: int
    euid: int
    suid: int
    rgid: int
    egid: int
    start_ticks: int  # /proc/<pid>/stat field 22: identifies the process with its pid
    comm: str
    event: str  # exec | uid | snapshot | poll
    parents: tuple[ParentInfo, ...] = ()  # nearest first
    stdio: dict[int, str] = field(default_factory=dict)  # fd 0/1/2 -> readlink of /proc/<pid>/fd/N
    sockets: dict[int, SocketInfo] = field(default_factory=dict)  # fd -> inet socket
    previous_exe: str = ""  # exe this pid ran before the exec, when the collector knew it
    event_ns: int = 0  # CLOCK_MONOTONIC ns of the kernel event (or of the poll)

    @property
    def cmdline_str(self) -> str:
        return " ".join(self.cmdline)

    @property
    def name(self) -> str:
        return os.path.basename(self.exe) if self.exe else self.comm

    @property
    def parent(self) -> ParentInfo | None:
        return self.parents[0] if self.parents else None

    def stdio_sockets(self) -> dict[int, SocketInfo]:
        return {fd: s for fd, s in self.sockets.items() if fd in (0, 1, 2)}

    def tree(self) -> list[dict[str, object]]:
        """The process and its parents, for alarm evidence."""
        out: list[dict[str, object]] = [
            {
                "pid": self.pid,
                "exe": self.exe,
                "cmdline": self.cmdline_str[:1024],
                "ruid": self.ruid,
                "euid": self.euid,
            }
        ]
        out += [
            {"pid": p.pid, "exe": p.exe, "cmdline": p.cmdline[:1024], "ruid": p.ruid, "euid": p.euid}
            for p in self.parents
        ]
        return out


@dataclass(frozen=True)
class ProcessExit:
    pid: int
    exit_code: int
