"""The ``hostward`` console script against a real manager (``hostward manager serve --plain-http``).

Every test runs the installed console script in a subprocess, exactly as an operator or a script would,
with its own ``$HOSTWARD_HOME`` so that no test sees another's login.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

HOSTWARD = Path(sys.executable).with_name("hostward")
SCRUBBED_ENV = (
    "HOSTWARD_HOME",
    "HOSTWARD_URL",
    "HOSTWARD_TOKEN",
    "HOSTWARD_PASSWORD",
    "HOSTWARD_ADMIN_PASSWORD",
    "HOSTWARD_DEBUG",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(HOSTWARD_HOME=str(home), COLUMNS="200", **extra)
    return env


def hostward(
    args: Sequence[str | Path], home: Path, *, timeout: float = 60, **extra_env: str
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


PASSWORD_LINE = re.compile(r"^admin password: (\S+)$", re.MULTILINE)


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


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"manager exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"manager not healthy after {timeout} s:\n{log.read_text()[-4000:]}")


@contextmanager
def running_manager(root: Path) -> Iterator[Manager]:
    """``manager init`` (twice) then ``manager serve --plain-http`` on free loopback ports."""
    data_dir, home, log = root / "data", root / "home", root / "manager.log"
    first = ok(hostward(["manager", "init", "--data-dir", data_dir], home, timeout=120))
    second = ok(hostward(["manager", "init", "--data-dir", data_dir], home, timeout=120))
    match = PASSWORD_LINE.search(first)
    assert match, f"no admin password printed by the first init: {first!r}"
    port, agent_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [
                str(HOSTWARD), "manager", "serve", "--data-dir", str(data_dir),
                "--listen", f"127.0.0.1:{port}", "--agent-listen", f"127.0.0.1:{agent_port}", "--plain-http",
            ],
            env=cli_env(home),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_healthy(url, proc, log)
            yield Manager(url, agent_port, data_dir, home, match.group(1), first, second, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("manager did not stop within 30 s of SIGTERM")


def login(manager: Manager, home: Path) -> None:
    ok(
        hostward(
            ["login", "--url", manager.url, "--username", "admin"], home, HOSTWARD_PASSWORD=manager.password
        )
    )


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manager]:
    with running_manager(tmp_path_factory.mktemp("cli-manager")) as m:
        login(m, m.home)
        yield m


# --- manager init / serve -------------------------------------------------------------------------


def test_init_prints_admin_password_once(manager: Manager) -> None:
    assert len(PASSWORD_LINE.findall(manager.first_init)) == 1
    assert "admin password" not in manager.second_init
    assert "already initialised" in manager.second_init
    assert (manager.data_dir / "manager.toml").exists()


def test_init_takes_admin_password_from_environment(tmp_path: Path) -> None:
    args = ["manager", "init", "--data-dir", tmp_path / "data"]
    out = ok(hostward(args, tmp_path, HOSTWARD_ADMIN_PASSWORD="s3cret-Pass"))
    assert "s3cret-Pass" not in out
    assert "HOSTWARD_ADMIN_PASSWORD" in out


def test_serve_refuses_bad_config_naming_the_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "manager.toml").write_text('heartbeat_interval = "x"\n')
    result = hostward(
        ["manager", "serve", "--data-dir", data_dir, "--listen", f"127.0.0.1:{free_port()}", "--plain-http"],
        tmp_path,
    )
    line = one_line_error(result)
    assert result.returncode == 2
    assert "heartbeat_interval" in line
    assert "manager.toml" in line


def test_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    result = hostward(
        ["manager", "serve", "--data-dir", data_dir, "--listen", f"0.0.0.0:{free_port()}", "--plain-http"],
        tmp_path,
    )
    line = one_line_error(result)
    assert result.returncode == 2
    assert "plain_http" in line


def test_serve_refuses_missing_data_dir(tmp_path: Path) -> None:
    result = hostward(["manager", "serve", "--data-dir", tmp_path / "nope"], tmp_path)
    line = one_line_error(result)
    assert result.returncode == 2
    assert "manager init" in line


# --- login and tokens -----------------------------------------------------------------------------


def test_login_stores_token_in_private_file(manager: Manager, tmp_path: Path) -> None:
    home = tmp_path / "home"
    args = ["login", "--url", manager.url + "/", "--username", "admin"]
    out = ok(hostward(args, home, HOSTWARD_PASSWORD=manager.password))
    assert "logged in" in out
    creds = home / "credentials.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    stored = json.loads(creds.read_text())
    assert stored["url"] == manager.url
    assert stored["token"]
    assert as_json(hostward(["servers", "list", "--json"], home)) == []
    ok(hostward(["logout"], home))
    assert not creds.exists()


def test_login_with_wrong_password_is_one_line(manager: Manager, tmp_path: Path) -> None:
    result = hostward(
        ["login", "--url", manager.url, "--username", "admin"], tmp_path, HOSTWARD_PASSWORD="wrong-password"
    )
    one_line_error(result)
    assert not (tmp_path / "credentials.json").exists()


def test_token_create_json(manager: Manager) -> None:
    token = as_json(hostward(["token", "create", "--json", "--hours", "2", "--max-uses", "3"], manager.home))
    for key in ("token", "ca_fingerprint", "agent_url", "install_command"):
        assert token[key], key
    assert token["agent_url"].endswith(f":{manager.agent_port}")
    assert token["max_uses"] == 3
    command = token["install_command"]
    assert token["token"] in command
    assert token["ca_fingerprint"] in command
    assert token["agent_url"] in command
    listed = as_json(hostward(["token", "list", "--json"], manager.home))
    assert token["id"] in [t["id"] for t in listed]


# --- servers, quotas, protection, scans -----------------------------------------------------------


def test_servers_list_json_empty(manager: Manager) -> None:
    assert as_json(hostward(["servers", "list", "--json"], manager.home)) == []


def test_quotas_add_and_list_json(manager: Manager) -> None:
    added = as_json(
        hostward(
            ["quotas", "add", "--edition", "premium", "--count", "2", "--expires", "2099-12-31", "--json"],
            manager.home,
        )
    )
    assert len(added) == 2
    quotas = as_json(hostward(["quotas", "list", "--json", "--edition", "premium"], manager.home))
    ids = {q["id"] for q in added}
    mine = [q for q in quotas if q["id"] in ids]
    assert len(mine) == 2
    for quota in mine:
        assert {"id", "edition", "status", "usage", "server_id"} <= quota.keys()
        assert (quota["edition"], quota["status"], quota["usage"], quota["server_id"]) == (
            "premium",
            "normal",
            "idle",
            None,
        )
        assert quota["expires_at"].startswith("2099-12-31")
    table = ok(hostward(["quotas", "list"], manager.home))
    for quota_id in ids:
        assert quota_id in table


def test_quotas_add_rejects_bad_date(manager: Manager) -> None:
    args = ["quotas", "add", "--edition", "premium", "--count", "1", "--expires", "soon"]
    result = hostward(args, manager.home)
    assert "--expires" in one_line_error(result)
    assert result.returncode == 2


def test_protection_enable_unknown_server_is_one_line(manager: Manager) -> None:
    result = hostward(["protection", "enable", "no-such-server", "--edition", "premium"], manager.home)
    line = one_line_error(result)
    assert "no-such-server" in line
    assert result.stdout == ""


def test_protection_refusal_reason_comes_from_the_manager(manager: Manager) -> None:
    args = ["servers", "add", "cli-no-agent", "--ip", "192.0.2.7", "--json"]
    server = as_json(hostward(args, manager.home))
    try:
        listed = as_json(hostward(["servers", "list", "--json"], manager.home))
        (entry,) = [s for s in listed if s["id"] == server["id"]]
        for key in ("id", "name", "agent_status", "protection_status", "edition", "quota_id", "scan_result"):
            assert key in entry, key
        assert entry["agent_status"] == "not_installed"
        result = hostward(["protection", "enable", "cli-no-agent", "--edition", "premium"], manager.home)
        line = one_line_error(result)
        assert result.returncode == 1
        assert "online" in line  # a quota binds only to a server whose agent is online
    finally:
        ok(hostward(["servers", "delete", server["id"]], manager.home))
    assert as_json(hostward(["servers", "list", "--json"], manager.home)) == []


def test_scans_list_json_empty(manager: Manager) -> None:
    assert as_json(hostward(["scans", "list", "--json"], manager.home)) == []


def test_policies_list_shows_presets(manager: Manager) -> None:
    groups = as_json(hostward(["policies", "list", "--json"], manager.home))
    assert {g["edition"] for g in groups} >= {"enterprise", "premium"}


# --- errors ---------------------------------------------------------------------------------------


def test_not_logged_in_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(hostward(["servers", "list"], tmp_path))
    assert "hostward login" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = hostward(["servers", "list", "--debug"], tmp_path)
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: not logged in")


def test_unreachable_manager_is_one_line(tmp_path: Path) -> None:
    result = hostward(
        ["quotas", "list", "--json"],
        tmp_path,
        HOSTWARD_URL=f"http://127.0.0.1:{free_port()}",
        HOSTWARD_TOKEN="x",
    )
    assert "cannot reach the manager" in one_line_error(result)
    assert result.stdout == ""


# --- two real agents, one quota (SPEC §3 through the CLI) ----------------------------------------


def _wait_for(what: str, check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_two_agents_one_quota(tmp_path: Path) -> None:
    with running_manager(tmp_path / "m") as m:
        login(m, m.home)
        ok(hostward(["quotas", "add", "--edition", "premium", "--count", "1"], m.home))
        token = as_json(hostward(["token", "create", "--json"], m.home))
        agents: list[subprocess.Popen[bytes]] = []
        try:
            for name in ("cli-a", "cli-b"):
                state = tmp_path / name
                ok(
                    hostward(
                        [
                            "agent", "enroll", "--manager", token["agent_url"], "--token", token["token"],
                            "--ca-fingerprint", token["ca_fingerprint"], "--state-dir", state, "--name", name,
                        ],
                        m.home,
                    )
                )  # fmt: skip
                log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
                agents.append(
                    subprocess.Popen(
                        [str(HOSTWARD), "agent", "run", "--state-dir", str(state)],
                        env=cli_env(m.home),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
                log.close()

            def servers() -> dict[str, dict[str, Any]]:
                listed = as_json(hostward(["servers", "list", "--json"], m.home))
                return {s.get("agent_name") or s["name"]: s for s in listed}

            def both_online() -> dict[str, dict[str, Any]] | None:
                listed = servers()
                states = [listed.get(name, {}).get("agent_status") for name in ("cli-a", "cli-b")]
                return listed if states == ["online", "online"] else None

            online = _wait_for("both agents online", both_online, 30)
            first, second = online["cli-a"]["id"], online["cli-b"]["id"]

            ok(hostward(["protection", "enable", first, "--edition", "premium"], m.home))
            after = servers()["cli-a"]
            assert after["protection_status"] == "opened"
            assert after["edition"] == "premium"
            assert after["quota_id"]

            scans = as_json(hostward(["scans", "list", "--server", first, "--json"], m.home))
            assert [(s["kind"], s["trigger"]) for s in scans] == [("full", "enable")]
            _wait_for(
                "the comprehensive-detection scan to finish",
                lambda: (
                    as_json(hostward(["scans", "list", "--server", first, "--json"], m.home))[0]["status"]
                    == "succeeded"
                ),
                120,
            )

            refused = hostward(["protection", "enable", second, "--edition", "premium"], m.home)
            assert one_line_error(refused)
            assert servers()["cli-b"]["protection_status"] == "closed"

            ok(hostward(["protection", "disable", first], m.home))
            (quota,) = as_json(hostward(["quotas", "list", "--json"], m.home))
            assert (quota["usage"], quota["server_id"]) == ("idle", None)
            assert servers()["cli-a"]["protection_status"] == "closed"
        finally:
            for proc in agents:
                proc.send_signal(signal.SIGTERM)
            for proc in agents:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
