"""The agent's control socket for ``hostward wtp exec -- CMD``: ``<state_dir>/wtp.sock``, root only.

One connection is one privileged session, newline-delimited JSON both ways:

    client → {"op": "begin", "exe": "/usr/bin/rsync", "argv": ["rsync", ...]}
    agent  → {"ok": true, "guard": true}          (lock lifted; "guard": false when WTP is off here)
             {"ok": false, "code": "wtp_not_privileged", "error": "..."}
    client runs the command itself (its own terminal, environment and working directory), then
    client → {"op": "end", "status": 0}
    agent  → {"ok": true, "backup_at": "..."}     (backup refreshed, lock set again)

The command is started by the CLI, not by the agent, so it is the privileged executable itself that
writes (the guard trusts writers whose executable is in the privileged list and keeps rolling back
named writes of any other process during the session). When the connection closes without "end"
(the CLI was killed), the session ends there: backup refreshed, lock set again.
Peers are checked with SO_PEERCRED: only uid 0 is served; the socket file is 0600 in the 0700 state
directory as well.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostward.agent.errors import AgentError

if TYPE_CHECKING:
    from hostward.agent.wtprunner import WtpRunner

log = logging.getLogger(__name__)

SOCKET_NAME = "wtp.sock"
MAX_LINE = 256 * 1024
MAX_SESSIONS = 16


def peer_creds(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end (SO_PEERCRED)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", creds)
    return int(pid), int(uid)


def peer_uid(sock: socket.socket) -> int:
    return peer_creds(sock)[1]


class LineChannel:
    """JSON lines over a stream socket (both ends use it)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def recv(self) -> dict[str, Any] | None:
        """The next message, or None at end of stream; ``ValueError`` for a malformed one."""
        while b"\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self._buf += chunk
            if len(self._buf) > MAX_LINE:
                raise ValueError("message too long")
        line, self._buf = self._buf.split(b"\n", 1)
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        return data


class WtpControl:
    """Serves privileged sessions for a ``WtpRunner``; ``start``/``stop``."""

    def __init__(
        self, state_dir: Path, runner: WtpRunner, *, allowed_uids: frozenset[int] = frozenset({0})
    ) -> None:
        self.path = Path(state_dir) / SOCKET_NAME
        self.runner = runner
        self.allowed_uids = allowed_uids
        self.error = ""
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._sessions = threading.BoundedSemaphore(MAX_SESSIONS)
        self.counters: dict[str, int] = {"sessions": 0, "refused": 0}

    def start(self) -> None:
        if self._sock is not None:
            return
        try:
            self.path.unlink()  # a stale socket from a previous run (the agent's lock file says it is ours)
        except FileNotFoundError:
            pass
        except OSError as exc:
            self.error = f"cannot remove the old {self.path}: {exc}"
            log.error("wtp control: %s", self.error)
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            self.error = f"cannot listen on {self.path}: {exc}"
            log.error("wtp control: %s", self.error)
            return
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="hostward-wtpctl", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            try:
                self.path.unlink()
            except OSError:
                pass

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            conn.settimeout(None)
            if not self._sessions.acquire(blocking=False):
                _refuse(conn, "busy", "too many privileged sessions at once")
                continue
            threading.Thread(
                target=self._serve, args=(conn,), name="hostward-wtp-session", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            pid, uid = peer_creds(conn)
            if uid not in self.allowed_uids:
                self.counters["refused"] += 1
                _refuse(conn, "forbidden", f"uid {uid} may not run privileged commands (root only)")
                return
            self._session(LineChannel(conn), pid)
        except (OSError, ValueError) as exc:
            log.warning("wtp control: session failed: %s", exc)
        finally:
            conn.close()
            self._sessions.release()

    def _session(self, ch: LineChannel, peer_pid: int | None = None) -> None:
        first = ch.recv()
        if first is None:
            return
        if first.get("op") == "status":
            guard = self.runner.guard
            ch.send({"ok": True, "status": None if guard is None else guard.status().__dict__})
            return
        exe = first.get("exe")
        if first.get("op") != "begin" or not isinstance(exe, str) or not exe.startswith("/"):
            ch.send({"ok": False, "code": "bad_request", "error": "expected {op: begin, exe: absolute path}"})
            return
        self.counters["sessions"] += 1
        try:
            # the CLI (peer) starts the command: its children are the session's processes
            with self.runner.privileged(exe, session_pid=peer_pid or None) as guard:
                ch.send({"ok": True, "guard": guard is not None})
                log.info("wtp: privileged session for %s started", exe)
                status = self._wait_end(ch)
                log.info("wtp: privileged session for %s ended (exit status %s)", exe, status)
        except AgentError as exc:
            _answer_error(ch, exc.code, str(exc))
            return
        except OSError as exc:
            _answer_error(ch, "wtp_error", f"backup refresh failed: {exc}")
            return
        guard_now = self.runner.guard
        try:
            ch.send({"ok": True, "backup_at": guard_now.status().backup_at if guard_now else None})
        except OSError:
            pass  # the CLI is gone; the session is over anyway

    @staticmethod
    def _wait_end(ch: LineChannel) -> int | None:
        while True:
            try:
                msg = ch.recv()
            except (OSError, ValueError):
                return None
            if msg is None:
                return None
            if msg.get("op") == "end":
                status = msg.get("status")
                return status if isinstance(status, int) else None


def _answer_error(ch: LineChannel, code: str, message: str) -> None:
    try:
        ch.send({"ok": False, "code": code, "error": message})
    except OSError:
        pass


def _refuse(conn: socket.socket, code: str, message: str) -> None:
    try:
        LineChannel(conn).send({"ok": False, "code": code, "error": message})
    except OSError:
        pass
    finally:
        conn.close()
