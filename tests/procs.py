"""Real hostward processes for tests: the ``hostward`` console script, a manager, agents.

The manager is set up with ``hostward manager init`` and run with ``hostward manager serve --plain-http``
on free loopback ports; agents are enrolled with ``hostward agent enroll`` and run with ``hostward agent
run``. Every wait is bounded (a deadline, then a failure showing the end of the process's log) and every
process started here is stopped, SIGTERM first and SIGKILL after a grace period, even when the test fails.
Children also get SIGKILL from the kernel if the test runner itself dies (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.conftest import free_port

HOSTWARD = Path(sys.executable).with_name("hostward")
SCRUBBED_ENV = (
    "HOSTWARD_HOME",
    "HOSTWARD_URL",
    "HOSTWARD_TOKEN",
    "HOSTWARD_PASSWORD",
    "HOSTWARD_ADMIN_PASSWORD",
    "HOSTWARD_DEBUG",
)
PASSWORD_LINE = re.compile(r"^admin password: (\S+)$", re.MULTILINE)
STOP_TIMEOUT_S = 30.0

_T = TypeVar("_T")

# --- the console script ---------------------------------------------------------------------------


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(HOSTWARD_HOME=str(home), COLUMNS="200", PYTHONUNBUFFERED="1", **extra)
    return env


def hostward(
    args: Sequence[object], home: Path, *, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """Run the real console script; output captured as text."""
    assert HOSTWARD.exists(), f"console script missing at {HOSTWARD}: run `make install`"
    return subprocess.run(
        [str(HOSTWARD), *map(str, args)],
        env=cli_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    detail = f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.returncode == 0, detail
    return result.stdout


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the CLI failed with exactly one line on stderr and return it."""
    assert result.returncode != 0, f"expected a failure, got exit 0: {result.stdout}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    return lines[0]


# --- bounded waits --------------------------------------------------------------------------------


def tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(no log at {path}: {exc})"


def wait_for(
    what: str,
    check: Callable[[], _T | None],
    timeout: float,
    *,
    interval: float = 0.5,
    logs: Sequence[Path] = (),
) -> _T:
    """Poll ``check`` until it returns something truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    shown = "".join(f"\n--- {log} ---\n{tail(log)}" for log in logs)
    pytest.fail(f"timed out after {timeout} s waiting for {what}{shown}")


# --- long-running processes -----------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Proc:
    """A long-running process whose output is appended to ``log`` (one log across restarts)."""

    def __init__(self, name: str, argv: Sequence[object], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = [str(a) for a in argv]
        self.env = dict(env)
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n===== start {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def check_alive(self) -> None:
        """Fail the test, showing the log, if the process has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.popen.returncode}:\n{tail(self.log)}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; a process that does not stop in time is killed and the test fails."""
        assert self.popen is not None, f"{self.name} was never started"
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                pytest.fail(f"{self.name} did not stop within {timeout} s of SIGTERM:\n{tail(self.log)}")
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL and reap: no shutdown code runs."""
        assert self.popen is not None, f"{self.name} was never started"
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()

    def cleanup(self, grace: float = 15.0) -> None:
        """Best effort and never raises: SIGTERM, then SIGKILL after ``grace`` seconds."""
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        try:
            popen.send_signal(signal.SIGTERM)
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        except OSError:
            pass


class Procs:
    """Every process a test starts; ``close()`` (or leaving the ``with``) stops those still running."""

    def __init__(self) -> None:
        self._procs: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self._procs):  # agents before the manager they talk to
            proc.cleanup()

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the manager ----------------------------------------------------------------------------------


@dataclass
class Manager:
    url: str
    agent_port: int
    data_dir: Path
    home: Path
    password: str
    first_init: str
    second_init: str
    log: Path
    port: int = 0
    proc: Proc | None = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        """The SQLite database (managers initialised without ``--database-url``)."""
        return self.data_dir / "hostward.db"

    def start(self, timeout: float = 60) -> None:
        """Start ``manager serve`` (again: same data dir, same ports) and wait until it is healthy."""
        assert self.proc is not None
        self.proc.start()
        _wait_healthy(self.url, self.proc, timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        assert self.proc is not None
        return self.proc.stop(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


def _wait_healthy(url: str, proc: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"manager not healthy after {timeout} s:\n{tail(proc.log)}")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


@contextmanager
def running_manager(
    root: Path,
    *,
    database_url: str | None = None,
    config: Mapping[str, object] | None = None,
    procs: Procs | None = None,
) -> Iterator[Manager]:
    """``manager init`` (twice) then ``manager serve --plain-http`` on free loopback ports.

    ``config`` adds keys to ``manager.toml`` (e.g. ``heartbeat_interval``); the manager is stopped with
    SIGTERM on exit (failing the test if it does not stop), unless the test already stopped it.
    """
    data_dir, home, log = root / "data", root / "home", root / "manager.log"
    init = ["manager", "init", "--data-dir", data_dir]
    if database_url:
        init += ["--database-url", database_url]
    first = ok(hostward(init, home, timeout=120))
    second = ok(hostward(["manager", "init", "--data-dir", data_dir], home, timeout=120))
    match = PASSWORD_LINE.search(first)
    assert match, f"no admin password printed by the first init: {first!r}"
    if config:
        with open(data_dir / "manager.toml", "a") as toml:
            toml.writelines(f"{key} = {_toml_value(value)}\n" for key, value in config.items())
    port, agent_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        HOSTWARD, "manager", "serve", "--data-dir", data_dir,
        "--listen", f"127.0.0.1:{port}", "--agent-listen", f"127.0.0.1:{agent_port}", "--plain-http",
    ]  # fmt: skip
    proc = Proc("manager", argv, cli_env(home), log)
    if procs is not None:
        procs.add(proc)
    manager = Manager(url, agent_port, data_dir, home, match.group(1), first, second, log, port, proc)
    try:
        manager.start()
        yield manager
    finally:
        if proc.running:
            manager.stop()


def login(manager: Manager, home: Path) -> None:
    ok(
        hostward(
            ["login", "--url", manager.url, "--username", "admin"], home, HOSTWARD_PASSWORD=manager.password
        )
    )


class AdminApi:
    """The manager's REST API as its admin (``self.api``: base ``/api/v1``, bearer token)."""

    def __init__(self, manager: Manager, timeout: float = 10) -> None:
        resp = httpx.post(
            f"{manager.url}/api/v1/auth/login",
            json={"username": "admin", "password": manager.password},
            timeout=10,
        )
        resp.raise_for_status()
        self.api = httpx.Client(
            base_url=f"{manager.url}/api/v1",
            headers={"Authorization": f"Bearer {resp.json()['token']}"},
            timeout=timeout,
        )

    def get(self, path: str, **params: Any) -> Any:
        """GET ``path`` with the parameters that are not None; fails on an error status."""
        resp = self.api.get(path, params={k: v for k, v in params.items() if v is not None})
        resp.raise_for_status()
        return resp.json()


# --- agents ---------------------------------------------------------------------------------------


@dataclass
class Agent:
    name: str
    state_dir: Path
    home: Path
    proc: Proc = field(repr=False)

    @property
    def log(self) -> Path:
        return self.proc.log

    def start(self) -> None:
        self.proc.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        return self.proc.stop(timeout)

    def kill(self) -> None:
        self.proc.kill()

    def status(self) -> dict[str, Any]:
        """``hostward agent status --json`` (read-only: works whether the agent runs or not)."""
        result: dict[str, Any] = as_json(
            hostward(["agent", "status", "--state-dir", self.state_dir, "--json"], self.home)
        )
        return result

    @property
    def server_id(self) -> str:
        server_id = self.status()["server_id"]
        assert server_id, f"agent {self.name} is not enrolled"
        return str(server_id)


def enroll_agent(
    token: Mapping[str, Any],
    root: Path,
    name: str,
    home: Path,
    *,
    config: Mapping[str, object] | None = None,
    procs: Procs | None = None,
) -> Agent:
    """``hostward agent enroll`` into ``root/name`` (with ``config`` written to its agent.toml first)."""
    state = root / name
    if config:
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        (state / "agent.toml").write_text(
            "".join(f"{key} = {_toml_value(value)}\n" for key, value in config.items())
        )
    ok(
        hostward(
            [
                "agent", "enroll", "--manager", token["agent_url"], "--token", token["token"],
                "--ca-fingerprint", token["ca_fingerprint"], "--state-dir", state, "--name", name,
            ],
            home,
        )
    )  # fmt: skip
    proc = Proc(
        f"agent {name}", [HOSTWARD, "agent", "run", "--state-dir", state], cli_env(home), root / f"{name}.log"
    )
    if procs is not None:
        procs.add(proc)
    return Agent(name, state, home, proc)
