"""The host as a baseline run sees it: files, permissions, processes, sysctl values and commands.

Every path a rule names is absolute (``/etc/ssh/sshd_config``) and is read under ``root``, so tests and
offline checks run on a prepared tree (processes from ``ROOT/proc/*/comm``, sysctl values from
``ROOT/proc/sys``). Commands are the exception: they always run on the real host, with a timeout, in
their own process group that is killed as a whole when the timeout expires, and with a bounded output.
"""

from __future__ import annotations

import contextlib
import glob
import os
import selectors
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_COMMAND_TIMEOUT_S = 10.0
MAX_COMMAND_OUTPUT = 4 * 1024 * 1024
MAX_FILE_BYTES = 16 * 1024 * 1024
_COMMAND_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


@dataclass(frozen=True)
class CommandOutput:
    """``timed_out`` / ``error`` set means the output could not be obtained (rule not applicable)."""

    returncode: int | None
    stdout: str
    timed_out: bool = False
    error: str = ""


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # /proc/PID/comm
    argv: tuple[str, ...]


@dataclass
class HostView:
    """Read-only access to the host below ``root``; caches what several rules ask for."""

    root: Path = Path("/")
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S
    allow_commands: bool = True
    _lines: dict[str, list[str] | OSError] = field(default_factory=dict, repr=False)
    _processes: list[Process] | None = field(default=None, repr=False)
    _commands: dict[tuple[str, ...], CommandOutput] = field(default_factory=dict, repr=False)
    _users: dict[str, int] | None = field(default=None, repr=False)
    _groups: dict[str, int] | None = field(default=None, repr=False)

    # ---- paths -----------------------------------------------------------------------------------

    def path(self, absolute: str) -> Path:
        """Where the host path ``absolute`` lives under ``root``."""
        return self.root / absolute.lstrip("/")

    def display(self, real: Path) -> str:
        """The host path for a path under ``root`` (for reasons)."""
        if self.root == Path("/"):
            return str(real)
        try:
            return "/" + str(real.relative_to(self.root))
        except ValueError:
            return str(real)

    def glob(self, pattern: str) -> list[Path]:
        """Existing paths matching a host glob pattern (sorted); a plain path is returned as is."""
        if not glob.has_magic(pattern):
            return [self.path(pattern)]
        return sorted(Path(p) for p in glob.glob(str(self.path(pattern))))

    def lstat(self, real: Path) -> os.stat_result | None:
        try:
            return real.lstat()
        except FileNotFoundError:
            return None

    def stat(self, real: Path) -> os.stat_result | None:
        """stat following symlinks, but only inside ``root`` (a link to /etc/x means ROOT/etc/x)."""
        resolved = self.resolve(real)
        if resolved is None:
            return None
        try:
            return resolved.stat()
        except FileNotFoundError:
            return None

    def resolve(self, real: Path, depth: int = 0) -> Path | None:
        """Follow symlinks the way the host would see them when ``root`` is not ``/``."""
        if self.root == Path("/"):
            return real
        st = self.lstat(real)
        if st is None or not stat.S_ISLNK(st.st_mode):
            return real
        if depth > 16:
            return None
        target = os.readlink(real)
        nxt = self.path(target) if target.startswith("/") else real.parent / target
        return self.resolve(nxt, depth + 1)

    def read_lines(self, real: Path) -> list[str]:
        """Lines of a text file (bounded size), cached; raises OSError when it cannot be read."""
        key = str(real)
        cached = self._lines.get(key)
        if isinstance(cached, OSError):
            raise cached
        if cached is not None:
            return cached
        try:
            resolved = self.resolve(real) or real
            with open(resolved, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES)
            lines = data.decode("utf-8", errors="replace").splitlines()
        except OSError as exc:
            self._lines[key] = exc
            raise
        self._lines[key] = lines
        return lines

    # ---- users and groups (from the tree's own /etc/passwd and /etc/group) -------------------------

    def _id_table(self, name: str) -> dict[str, int]:
        table: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.read_lines(self.path(f"/etc/{name}")):
                parts = line.split(":")
                if len(parts) >= 3 and parts[2].isdigit():
                    table.setdefault(parts[0], int(parts[2]))
        return table

    def uid(self, user: str) -> int | None:
        if user.isdigit():
            return int(user)
        if self._users is None:
            self._users = self._id_table("passwd")
        if user in self._users:
            return self._users[user]
        return 0 if user == "root" else None

    def gid(self, group: str) -> int | None:
        if group.isdigit():
            return int(group)
        if self._groups is None:
            self._groups = self._id_table("group")
        if group in self._groups:
            return self._groups[group]
        return 0 if group == "root" else None

    # ---- processes and sysctl -------------------------------------------------------------------

    def processes(self) -> list[Process]:
        """Processes from ``ROOT/proc`` (read once per run)."""
        if self._processes is not None:
            return self._processes
        procs: list[Process] = []
        proc_dir = self.path("/proc")
        try:
            entries = list(os.scandir(proc_dir))
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.isdigit():
                continue
            base = Path(entry.path)
            try:
                name = (base / "comm").read_text(errors="replace").strip()
            except OSError:
                continue  # exited meanwhile
            try:
                raw = (base / "cmdline").read_bytes()
            except OSError:
                raw = b""
            argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
            procs.append(Process(int(entry.name), name, argv))
        self._processes = procs
        return procs

    def sysctl(self, key: str) -> str | None:
        """Runtime value of a kernel parameter (``net.ipv4.ip_forward``), None when it does not exist."""
        rel = key.replace(".", "/")
        try:
            return self.path(f"/proc/sys/{rel}").read_text().strip()
        except OSError:
            return None

    # ---- commands --------------------------------------------------------------------------------

    def run(self, argv: tuple[str, ...], timeout: float | None = None) -> CommandOutput:
        """Run ``argv`` (no shell) with a timeout; cached per argv for the run."""
        if argv in self._commands:
            return self._commands[argv]
        if not self.allow_commands:
            out = CommandOutput(None, "", error="commands are disabled for this policy source")
        else:
            out = run_command(argv, self.command_timeout if timeout is None else timeout)
        self._commands[argv] = out
        return out


def run_command(argv: tuple[str, ...], timeout: float, max_output: int = MAX_COMMAND_OUTPUT) -> CommandOutput:
    """Run a command without a shell; never blocks longer than about ``timeout`` + 2 s.

    The child gets its own session so that on timeout the whole process group (``sh -c 'sleep 1000'``
    and its children) is killed, not only the direct child whose descendants would keep the pipe open.
    """
    if not argv:
        return CommandOutput(None, "", error="empty command")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=_COMMAND_ENV,
        )
    except OSError as exc:
        return CommandOutput(None, "", error=f"cannot run {argv[0]}: {exc.strerror or exc}")
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(timeout=min(left, 0.5)):
                if proc.poll() is not None and not _readable(proc.stdout):
                    break
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size >= max_output:
                break  # enough to judge; the rest is dropped and the command stopped
    if timed_out or proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.stdout.close()
    try:
        returncode: int | None = proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        returncode = None
    text = b"".join(chunks)[:max_output].decode("utf-8", errors="replace")
    if timed_out:
        return CommandOutput(None, text, timed_out=True, error=f"timed out after {timeout:g} s")
    return CommandOutput(returncode, text)


def _readable(stream: object) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        return bool(sel.select(timeout=0))
