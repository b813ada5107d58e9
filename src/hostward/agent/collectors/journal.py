"""Follow the systemd journal through ``journalctl -o json -f`` with a persisted cursor.

A reader thread turns journalctl's JSON lines into ``JournalEntry`` records on a bounded queue; the
owner drains them with ``read()`` and calls ``commit()`` once they are processed, which stores the
cursor of the last entry handed out, so that a restart resumes with ``--after-cursor`` (first start:
``-n 0``, from now on). When journalctl exits (journald restarted, killed), it is started again after
a back-off, from the last entry received, so nothing is read twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_UNITS = (
    "ssh.service",
    "sshd.service",
    "ssh@*.service",
    "sshd@*.service",
    "dropbear.service",
    "vsftpd.service",
    "proftpd.service",
    "pure-ftpd.service",
    "mysql.service",
    "mysqld.service",
    "mariadb.service",
)
MAX_QUEUE = 100_000
MAX_MESSAGE = 64 * 1024


@dataclass(frozen=True)
class JournalEntry:
    cursor: str
    realtime: float | None  # epoch seconds
    identifier: str  # SYSLOG_IDENTIFIER, else _COMM
    message: str
    pid: int | None = None


class CursorStore(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


def parse_entry(line: bytes) -> JournalEntry | None:
    """One ``journalctl -o json`` line; None for anything that is not an entry with a cursor."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("__CURSOR"), str):
        return None
    message = data.get("MESSAGE")
    if isinstance(message, list):  # journald exports non-UTF-8 messages as a byte array
        try:
            message = bytes(b & 0xFF for b in message[:MAX_MESSAGE] if isinstance(b, int)).decode(
                "utf-8", "replace"
            )
        except (TypeError, ValueError):
            message = ""
    if not isinstance(message, str):
        message = ""
    realtime: float | None = None
    with contextlib.suppress(TypeError, ValueError):
        realtime = int(data.get("__REALTIME_TIMESTAMP")) / 1e6  # type: ignore[arg-type]
    pid: int | None = None
    with contextlib.suppress(TypeError, ValueError):
        pid = int(data.get("_PID") or data.get("SYSLOG_PID"))  # type: ignore[arg-type]
    identifier = data.get("SYSLOG_IDENTIFIER") or data.get("_COMM") or ""
    return JournalEntry(
        cursor=data["__CURSOR"],
        realtime=realtime,
        identifier=str(identifier),
        message=message,
        pid=pid,
    )


class JournalReader:
    """``journalctl -f`` in a thread; entries on a queue; the cursor persisted on ``commit()``."""

    def __init__(
        self,
        store: CursorStore,
        *,
        key: str = "journald",
        units: Sequence[str] = DEFAULT_UNITS,
        command: Sequence[str] = ("journalctl",),
        on_entry: Callable[[], None] | None = None,
        backoff_s: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self._store = store
        self._key = key
        self._units = tuple(units)
        self._command = tuple(command)
        self._on_entry = on_entry
        self._backoff = backoff_s
        self._queue: queue.Queue[JournalEntry] = queue.Queue(maxsize=MAX_QUEUE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        saved = store.get(key) or {}
        self._received_cursor: str | None = saved.get("cursor")  # newest entry the thread got
        self._handed_cursor: str | None = self._received_cursor  # newest entry given to the owner
        self.counters = {"entries": 0, "bad_lines": 0, "restarts": 0, "dropped": 0}
        self.last_error = ""

    def argv(self) -> list[str]:
        """The journalctl command line for the next start (from the last received cursor)."""
        args = [*self._command, "-o", "json", "-f", "--no-pager"]
        args += [f"--after-cursor={self._received_cursor}"] if self._received_cursor else ["-n", "0"]
        for unit in self._units:
            args += ["-u", unit]
        return args

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="journal-reader", daemon=True)
            self._thread.start()

    def read(self, limit: int = 10_000) -> list[JournalEntry]:
        """Entries received so far (up to ``limit``), without waiting."""
        out: list[JournalEntry] = []
        while len(out) < limit:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if out:
            self._handed_cursor = out[-1].cursor
        return out

    def commit(self) -> None:
        """Persist the cursor of the last entry handed out by ``read()``."""
        if self._handed_cursor:
            self._store.put(self._key, {"cursor": self._handed_cursor})

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._proc is not None and self._proc.poll() is None

    def _run(self) -> None:
        delay = self._backoff[0]
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
                )
            except OSError as exc:
                self.last_error = f"cannot start journalctl: {exc}"
                log.warning("%s", self.last_error)
            else:
                with self._lock:
                    self._proc = proc
                assert proc.stdout is not None
                self._pump(proc.stdout)
                proc.wait()
                err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
                if proc.stderr:
                    proc.stderr.close()
                proc.stdout.close()
                if self._stop.is_set():
                    return
                self.last_error = f"journalctl exited with {proc.returncode}: {err[-300:]}"
                log.warning("%s", self.last_error)
            self.counters["restarts"] += 1
            if time.monotonic() - started > 60:
                delay = self._backoff[0]  # it ran a while: a fresh failure, not a crash loop
            self._stop.wait(delay)
            delay = min(delay * 2, self._backoff[1])

    def _pump(self, stream: IO[bytes]) -> None:
        for line in stream:
            if self._stop.is_set():
                return
            entry = parse_entry(line)
            if entry is None:
                self.counters["bad_lines"] += 1
                continue
            self._received_cursor = entry.cursor
            try:
                self._queue.put(entry, timeout=1.0)
            except queue.Full:
                self.counters["dropped"] += 1  # owner stalled for long: better than unbounded memory
                continue
            self.counters["entries"] += 1
            if self._on_entry is not None:
                self._on_entry()
