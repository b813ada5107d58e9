"""Shared benchmark plumbing: a real manager in a subprocess, a throw-away database, percentiles.

Everything listens on loopback only. Every wait is bounded in time, and whatever is started (manager
process, PostgreSQL database, temporary directory) is cleaned up by the context managers even on
Ctrl-C, SIGTERM or a failure; the manager also gets SIGTERM from the kernel if this process dies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

PG_ADMIN_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
ADMIN_PASSWORD = "bench-admin-password"
HOSTWARD = [sys.executable, "-m", "hostward.cli"]
_PR_SET_PDEATHSIG = 1


class BenchError(RuntimeError):
    """The benchmark could not run (manager did not start, database unavailable, ...)."""


def install_sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` (process and database cleanup) runs."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), int(-(-p * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def latency_line(values_ms: Sequence[float]) -> tuple[str, dict[str, float]]:
    """``p50 .. p95 .. p99 .. max`` text and the numbers, from unsorted millisecond values."""
    ordered = sorted(values_ms)
    stats = {
        "p50": percentile(ordered, 50),
        "p95": percentile(ordered, 95),
        "p99": percentile(ordered, 99),
        "max": ordered[-1] if ordered else 0.0,
    }
    text = "  ".join(f"{k} {v:.1f} ms" for k, v in stats.items())
    return text, stats


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the benchmark is killed outright, so is the manager.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(
    argv: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (Ctrl-C reaches only us; we stop it in order), output to a file."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    if _niceness:
        # A new session is a new autogroup, which starts at nice 0.
        with contextlib.suppress(OSError):
            _renice(proc.pid, _niceness)
    return proc


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL of its process group after ``grace_s``; idempotent."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def temp_dir(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"(kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database (``hw_bench_<random>``), dropped afterwards; yields its URL."""
    import psycopg

    name = f"hw_bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BenchError(f"cannot create a PostgreSQL database via {admin_url}: {exc}") from exc
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@dataclass
class Manager:
    """A running ``hostward manager serve`` and how to reach it."""

    data_dir: Path
    database_url: str
    api_url: str
    agent_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    admin_password: str = ADMIN_PASSWORD
    _api_token: str | None = field(default=None, repr=False)

    @property
    def ca_path(self) -> Path:
        return self.data_dir / "pki" / "ca.pem"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One REST call as the admin (logs in on first use); BenchError on any failure."""
        with httpx.Client(base_url=self.api_url + "/api/v1", timeout=30) as client:
            if self._api_token is None:
                resp = client.post("/auth/login", json={"username": "admin", "password": self.admin_password})
                if resp.status_code != 200:
                    raise BenchError(f"admin login failed: {resp.status_code} {resp.text[:200]}")
                self._api_token = resp.json()["token"]
            resp = client.request(
                method, path, json=body, headers={"Authorization": f"Bearer {self._api_token}"}
            )
        if resp.status_code >= 400:
            raise BenchError(f"{method} {path}: {resp.status_code} {resp.text[:300]}")
        return resp.json() if resp.content else None

    def enrollment_token(self, description: str = "bench") -> tuple[str, str]:
        """A new unlimited enrollment token: (token, CA fingerprint)."""
        out = self.api("POST", "/enrollment-tokens", {"hours": 24, "description": description})
        return out["token"], out["ca_fingerprint"]

    def db_scalar(self, sql: str) -> Any:
        """One value straight from the manager's database (for cross-checking what was stored)."""
        from sqlalchemy import text

        from hostward.manager.db.engine import make_engine

        engine = make_engine(self.database_url or f"sqlite:///{self.data_dir / 'hostward.db'}")
        try:
            with engine.connect() as conn:
                return conn.execute(text(sql)).scalar()
        finally:
            engine.dispose()

    def process(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)


@contextlib.contextmanager
def running_manager(
    workdir: Path,
    database_url: str = "",
    settings: dict[str, Any] | None = None,
    start_timeout_s: float = 90.0,
) -> Iterator[Manager]:
    """``hostward manager init`` + ``hostward manager serve`` on free loopback ports; stopped on exit.

    ``settings`` are extra ``manager.toml`` keys (e.g. ``heartbeat_interval``). The console/API port uses
    plain HTTP (loopback only) since only the agent channel is measured.
    """
    data_dir = workdir / "manager"
    log_path = workdir / "manager.log"
    api_port, agent_port = free_port(), free_port()
    init = [
        *HOSTWARD,
        "manager",
        "init",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{api_port}",
        "--agent-listen",
        f"127.0.0.1:{agent_port}",
    ]
    if database_url:
        init += ["--database-url", database_url]
    env = {"HOSTWARD_ADMIN_PASSWORD": ADMIN_PASSWORD}
    done = subprocess.run(init, env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise BenchError(f"hostward manager init failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    extra = {"plain_http": True, **(settings or {})}
    with open(data_dir / "manager.toml", "a") as fh:
        for key, value in extra.items():
            rendered = ("true" if value else "false") if isinstance(value, bool) else repr(value)
            fh.write(f"{key} = {rendered}\n")
    proc = start_process([*HOSTWARD, "manager", "serve", "--data-dir", str(data_dir)], log_path)
    manager = Manager(
        data_dir,
        database_url,
        f"http://127.0.0.1:{api_port}",
        f"https://127.0.0.1:{agent_port}",
        proc,
        log_path,
    )
    try:
        _wait_ready(manager, start_timeout_s)
        yield manager
    finally:
        stop_process(proc)


def _wait_ready(manager: Manager, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if manager.proc.poll() is not None:
            raise BenchError(f"manager exited with {manager.proc.returncode}:\n{tail(manager.log_path)}")
        try:
            with httpx.Client(verify=str(manager.ca_path), timeout=2) as client:
                ok_agent = client.get(manager.agent_url + "/agent/v1/ca").status_code == 200
                ok_api = client.get(manager.api_url + "/api/v1/health").status_code == 200
            if ok_agent and ok_api:
                return
        except (httpx.HTTPError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise BenchError(f"manager not ready within {timeout_s:.0f} s ({last}):\n{tail(manager.log_path)}")


class CpuMeter:
    """CPU seconds used by a set of processes (and the whole machine) between ``start`` and ``stop``."""

    def __init__(self, groups: dict[str, list[psutil.Process]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._machine: Any = None
        self._t0 = 0.0
        self.cores: dict[str, float] = {}
        self.machine_busy = 0.0

    @staticmethod
    def _cpu(proc: psutil.Process) -> float | None:
        try:
            t = proc.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._machine = psutil.cpu_times()
        self._before = {
            name: {p.pid: c for p in procs if (c := self._cpu(p)) is not None}
            for name, procs in self.groups.items()
        }

    def stop(self) -> None:
        elapsed = max(1e-6, time.monotonic() - self._t0)
        for name, procs in self.groups.items():
            used = 0.0
            for p in procs:
                after = self._cpu(p)
                if after is not None and p.pid in self._before[name]:
                    used += after - self._before[name][p.pid]
            self.cores[name] = used / elapsed
        now = psutil.cpu_times()
        idle = (now.idle + getattr(now, "iowait", 0)) - (
            self._machine.idle + getattr(self._machine, "iowait", 0)
        )
        total = sum(now) - sum(self._machine)
        self.machine_busy = 0.0 if total <= 0 else 100.0 * (1 - idle / total)

    def line(self) -> str:
        parts = [f"{name} {cores:.2f} cores" for name, cores in self.cores.items()]
        n = psutil.cpu_count() or 1
        # Anything else running on the machine (other test suites...) skews the numbers: say so.
        others = max(0.0, self.machine_busy / 100 * n - sum(self.cores.values()))
        return (
            ", ".join(parts)
            + f", other processes {others:.2f} cores; machine busy {self.machine_busy:.0f}% of {n} cores"
        )


_niceness = 0


@contextlib.contextmanager
def priority(niceness: int, with_postgres: bool) -> Iterator[None]:
    """Run this process, what it starts and optionally PostgreSQL at ``niceness``; restored afterwards.

    On a machine shared with other work (other people's test suites), a negative value lets the
    benchmark measure the manager rather than the neighbours. With autogroup scheduling (Linux
    default) CPU is shared per session first, so the sessions' autogroup nice is set too.
    """
    global _niceness
    if niceness == 0:
        yield
        return
    restore: list[tuple[int, int, str | None]] = []
    try:
        restore.append(_renice(os.getpid(), niceness))
        if with_postgres:
            restore += [_renice(p.pid, niceness) for p in postgres_processes()]
    except OSError as exc:
        raise BenchError(f"cannot set priority {niceness}: {exc} (negative values need root)") from exc
    _niceness = niceness
    try:
        yield
    finally:
        _niceness = 0
        for pid, nice, group in reversed(restore):
            with contextlib.suppress(OSError):
                _renice(pid, nice, group)


def _renice(pid: int, niceness: int, group: str | None = None) -> tuple[int, int, str | None]:
    """Set every thread of ``pid`` and its session's autogroup; returns what to restore."""
    old = os.getpriority(os.PRIO_PROCESS, pid)
    old_group = None
    with contextlib.suppress(OSError):
        old_group = Path(f"/proc/{pid}/autogroup").read_text().split()[-1]
        Path(f"/proc/{pid}/autogroup").write_text(group if group is not None else str(niceness))
    try:
        tasks = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tasks = [pid]
    for task in tasks:
        with contextlib.suppress(ProcessLookupError):
            os.setpriority(os.PRIO_PROCESS, task, niceness)
    return pid, old, old_group


def postgres_processes() -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["name"]):
        if (p.info.get("name") or "").startswith("postgres"):
            procs.append(p)
    return procs
