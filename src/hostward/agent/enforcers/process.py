"""Kill a process tree: stop it, collect it, SIGKILL children first, record the kill in a ledger.

The tree is frozen with SIGSTOP before it is listed (again until no new child appears), so a fork
bomb or a respawning parent cannot slip a child past the kill. The deepest processes die first, the
root last. Refused outright: pid 0/1, kernel threads, the agent itself and every ancestor of it (killing
those would kill the agent), the configured manager pids, and any tree containing one of them; also a
pid whose start time differs from the one the detection saw (the pid was reused).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil

from hostward.agent.errors import AgentError
from hostward.agent.state.db import open_db
from hostward.core.clock import Clock, SystemClock
from hostward.core.ids import new_id

_MIGRATIONS = [
    (
        1,
        [
            """CREATE TABLE kills (
                id TEXT PRIMARY KEY,
                at TEXT NOT NULL,
                root_pid INTEGER NOT NULL,
                exe TEXT NOT NULL,
                cmdline TEXT NOT NULL,
                uid INTEGER,
                alarm_id TEXT,
                killed TEXT NOT NULL,
                gone TEXT NOT NULL,
                failed TEXT NOT NULL
            )"""
        ],
    )
]
MAX_FREEZE_ROUNDS = 5


class KillRefused(AgentError):
    code = "kill_refused"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class KillResult:
    root_pid: int
    exe: str
    cmdline: str
    killed: list[int]
    gone: list[int]
    failed: dict[int, str] = field(default_factory=dict)
    at: datetime | None = None
    id: str = ""

    def render(self) -> str:
        return f"SIGKILL {self.killed} (children first) of {self.root_pid} {self.exe}"


def _ancestors(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        proc: psutil.Process | None = psutil.Process(pid)
        while proc is not None and proc.pid > 0 and proc.pid not in out:
            out.add(proc.pid)
            proc = proc.parent()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return out


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: with the pid, identifies one process across pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
        return int(raw[raw.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _is_zombie(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _is_kernel_thread(proc: psutil.Process) -> bool:
    try:
        return proc.pid == 2 or proc.ppid() == 2
    except psutil.Error:
        return False


class ProcessKiller:
    """Kills process trees for alarms and policies; ``protected_pids`` are the manager's processes."""

    def __init__(
        self,
        *,
        protected_pids: Iterable[int] = (),
        ledger_path: Path | None = None,
        clock: Clock | None = None,
        self_pid: int | None = None,
    ) -> None:
        self.self_pid = self_pid or os.getpid()
        self.protected_pids = set(protected_pids)
        self.clock = clock or SystemClock()
        self._db: sqlite3.Connection | None = open_db(ledger_path, _MIGRATIONS) if ledger_path else None
        self._lock = threading.Lock()

    def protected(self) -> set[int]:
        """Pids never killed, computed now (the agent's ancestry can change when a parent exits)."""
        return {0, 1} | _ancestors(self.self_pid) | self.protected_pids

    def check(
        self, pid: int, *, create_time: float | None = None, start: int | None = None
    ) -> psutil.Process:
        """The process to kill, or ``KillRefused`` with the reason; ``create_time`` (psutil) or ``start``
        (/proc start ticks) guard against a pid that was reused since the detection."""
        if pid <= 1:
            raise KillRefused(f"refusing to kill pid {pid}", reason="init")
        if pid in self.protected():
            raise KillRefused(
                f"refusing to kill pid {pid}: the agent, one of its parents or the manager",
                reason="protected",
            )
        try:
            proc = psutil.Process(pid)
            if _is_kernel_thread(proc):
                raise KillRefused(f"refusing to kill kernel thread {pid}", reason="kernel_thread")
            if (create_time is not None and abs(proc.create_time() - create_time) > 0.05) or (
                start is not None and start_ticks(pid) != start
            ):
                raise KillRefused(f"pid {pid} now belongs to another process", reason="pid_reused")
        except psutil.NoSuchProcess as exc:
            raise KillRefused(f"pid {pid} has already exited", reason="gone") from exc
        return proc

    def kill_tree(
        self,
        pid: int,
        *,
        create_time: float | None = None,
        start: int | None = None,
        alarm_id: str | None = None,
        timeout: float = 3.0,
    ) -> KillResult:
        """SIGKILL ``pid`` and all its descendants (deepest first); returns what died."""
        with self._lock:
            root = self.check(pid, create_time=create_time, start=start)
            try:
                exe = root.exe()
            except psutil.Error:
                exe = ""
            try:
                cmdline = " ".join(root.cmdline())[:4096]
                uid: int | None = root.uids().real
            except psutil.Error:
                cmdline, uid = "", None
            tree = self._freeze(root)
            protected = self.protected()
            clash = sorted(p.pid for p in tree if p.pid in protected)
            if clash:
                self._resume(tree)
                raise KillRefused(
                    f"refusing to kill the tree of {pid}: it contains protected pid(s) {clash}",
                    reason="protected",
                )
            depth = self._depths(root, tree)
            order = sorted(tree, key=lambda p: (-depth.get(p.pid, 0), p.pid))
            killed: list[int] = []
            gone: list[int] = []
            failed: dict[int, str] = {}
            for proc in order:
                try:
                    proc.send_signal(signal.SIGKILL)
                    killed.append(proc.pid)
                except psutil.NoSuchProcess:
                    gone.append(proc.pid)
                except psutil.Error as exc:
                    failed[proc.pid] = f"{type(exc).__name__}: {exc}"
            _, alive = psutil.wait_procs([p for p in order if p.pid in killed], timeout=timeout)
            for proc in alive:
                if _is_zombie(proc):
                    continue  # dead, waiting for its parent to reap it
                failed[proc.pid] = "still alive after SIGKILL"
                killed.remove(proc.pid)
            result = KillResult(pid, exe, cmdline, killed, gone, failed, self.clock.now(), new_id())
            self._record(result, uid, alarm_id)
            return result

    def _freeze(self, root: psutil.Process) -> list[psutil.Process]:
        stopped: dict[int, psutil.Process] = {}
        for _ in range(MAX_FREEZE_ROUNDS):
            try:
                current = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                current = [p for p in stopped.values()]
            new = [p for p in current if p.pid not in stopped]
            if not new:
                break
            for proc in new:
                try:
                    proc.send_signal(signal.SIGSTOP)
                except psutil.Error:
                    pass
                stopped[proc.pid] = proc
        return list(stopped.values())

    @staticmethod
    def _resume(tree: list[psutil.Process]) -> None:
        for proc in tree:
            try:
                proc.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass

    @staticmethod
    def _depths(root: psutil.Process, tree: list[psutil.Process]) -> dict[int, int]:
        parent: dict[int, int] = {}
        for proc in tree:
            try:
                parent[proc.pid] = proc.ppid()
            except psutil.Error:
                parent[proc.pid] = root.pid
        depth: dict[int, int] = {root.pid: 0}

        def of(pid: int, guard: int = 0) -> int:
            if pid in depth:
                return depth[pid]
            if guard > 64 or pid not in parent:
                return 0
            depth[pid] = of(parent[pid], guard + 1) + 1
            return depth[pid]

        for proc in tree:
            of(proc.pid)
        return depth

    def _record(self, result: KillResult, uid: int | None, alarm_id: str | None) -> None:
        if self._db is None:
            return
        self._db.execute(
            "INSERT INTO kills VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                result.id,
                (result.at or self.clock.now()).isoformat(),
                result.root_pid,
                result.exe,
                result.cmdline,
                uid,
                alarm_id,
                json.dumps(result.killed),
                json.dumps(result.gone),
                json.dumps({str(k): v for k, v in result.failed.items()}),
            ),
        )

    def ledger(self) -> list[dict[str, object]]:
        if self._db is None:
            return []
        rows = self._db.execute("SELECT * FROM kills ORDER BY at").fetchall()
        return [dict(r) for r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
