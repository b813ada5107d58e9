"""Child processes of ``hostward up``: start, watch, forward stop signals, stop in reverse order.

Signal handlers only record the signal; the waiting loop notices it and stops the children (last
started first), so the agent says goodbye before the manager it talks to goes away.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from hostward.cli.errors import CliError

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child (before exec): get SIGTERM if ``hostward up`` itself dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Interrupted(Exception):
    """A stop signal arrived while ``up`` was still starting things."""


@dataclass
class Child:
    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass
class Supervisor:
    """Owns the children; ``poll()`` raises when a stop was requested or a child died."""

    stop_grace_s: float = 20.0
    children: list[Child] = field(default_factory=list)
    stop_signal: int | None = None
    _previous: dict[int, Any] = field(default_factory=dict)

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only record it: the main loop does the work.
        if self.stop_signal is None:
            self.stop_signal = signum

    def start(
        self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
    ) -> Child:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        log.write(
            f"\n=== {name} started by hostward up at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a terminal Ctrl-C reaches only `up`, which stops the children in order.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        child = Child(name=name, argv=list(argv), log_path=log_path, proc=proc, log=log)
        self.children.append(child)
        return child

    def poll(self) -> None:
        """Raise ``Interrupted`` on a stop request, ``CliError`` when a child has exited."""
        if self.stop_signal is not None:
            raise Interrupted()
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                tail = child.tail()
                if tail:
                    sys.stderr.write(f"--- last lines of {child.log_path} ---\n{tail}\n---\n")
                raise CliError(f"the {child.name} exited with status {code} (log: {child.log_path})")

    def sleep(self, seconds: float) -> None:
        """Sleep while watching for stop requests and dead children."""
        deadline = time.monotonic() + seconds
        while True:
            self.poll()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.2, left))

    def wait_until(self, what: str, check: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise CliError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self.sleep(0.25)

    def run_forever(self) -> None:
        """Block until a stop signal (returns) or a child dies (raises ``CliError``)."""
        try:
            while True:
                self.sleep(1.0)
        except Interrupted:
            return

    def stop(self) -> None:
        """Stop children in reverse start order: forward the stop signal, then SIGKILL after the grace."""
        sig = self.stop_signal or signal.SIGTERM
        for child in reversed(self.children):
            if child.proc.poll() is None:
                try:
                    child.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
                try:
                    child.proc.wait(timeout=self.stop_grace_s)
                except subprocess.TimeoutExpired:
                    sys.stderr.write(
                        f"{child.name} did not stop within {self.stop_grace_s:.0f} s: killing it\n"
                    )
                    child.proc.kill()
                    child.proc.wait()
            child.log.close()
        self.children.clear()


def self_command(*args: str) -> list[str]:
    """argv running this same hostward installation (works without the console script on PATH)."""
    return [sys.executable, "-m", "hostward.cli", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
