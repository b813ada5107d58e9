"""``hostward up`` (what ``make run`` runs): manager + agent for this machine, clean stop on SIGINT."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

pytestmark = pytest.mark.slow

HOSTWARD = Path(sys.executable).with_name("hostward")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Up:
    """A running ``hostward up`` whose stdout is read line by line in the background."""

    def __init__(self, data_dir: Path, home: Path, port: int, agent_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTWARD_")}
        env.update(HOSTWARD_HOME=str(home), PYTHONUNBUFFERED="1")
        self.env = env
        args = ["up", "--data-dir", str(data_dir), "--port", str(port), "--agent-port", str(agent_port)]
        self.proc = subprocess.Popen(
            [str(HOSTWARD), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        pytest.fail(f"no line starting with {prefix!r}; output so far:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("hostward up did not stop within 60 s of SIGINT")
        while True:
            try:
                line = self._queue.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return code


def test_up_runs_manager_and_agent_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir, home = tmp_path / "hw", tmp_path / "home"
    port, agent_port = free_port(), free_port()

    first = Up(data_dir, home, port, agent_port)
    try:
        password_line = first.wait_for_line("admin password: ", 120)
        first.wait_for_line("server ", 90)  # "server NAME is Online"
        first.wait_for_line("console: ", 30)
    finally:
        code = first.stop()
    assert code == 0, "\n".join(first.lines)
    assert first.lines[-1] == "stopped"
    password_file = data_dir / "admin-password"
    assert password_file.read_text().strip() == password_line.split(": ", 1)[1]
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert port_free(port) and port_free(agent_port), "children still listening after stop"

    # Second run: no new password, logs in with the stored one, this machine is listed Online.
    second = Up(data_dir, home, port, agent_port)
    try:
        second.wait_for_line("server ", 120)
        second.wait_for_line("console: ", 30)
        argv = [str(HOSTWARD), "servers", "list", "--json"]
        listed = subprocess.run(argv, env=second.env, capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        servers = json.loads(listed.stdout)
        assert len(servers) == 1, servers  # re-enrolling the same machine keeps its server record
        assert servers[0]["agent_status"] == "online"
        assert servers[0]["protection_status"] == "closed"
    finally:
        code = second.stop()
    assert code == 0, "\n".join(second.lines)
    assert not any(line.startswith("admin password") for line in second.lines)
