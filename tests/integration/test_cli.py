"""The ``hostward`` console script against a real manager (``hostward manager serve --plain-http``).

Every test runs the installed console script in a subprocess, exactly as an operator or a script would,
with its own ``$HOSTWARD_HOME`` so that no test sees another's login.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.procs import (
    PASSWORD_LINE,
    Manager,
    Procs,
    as_json,
    enroll_agent,
    hostward,
    login,
    ok,
    one_line_error,
    running_manager,
    wait_for,
)

pytestmark = pytest.mark.slow


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


# --- two real agents, one quota (SPEC §3 through the CLI), on SQLite and on PostgreSQL -----------


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_two_agents_one_quota(tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    database_url = request.getfixturevalue("pg_url") if database == "postgres" else None
    # Procs is entered last so that it stops the agents before running_manager stops the manager.
    with running_manager(tmp_path / "m", database_url=database_url) as m, Procs() as procs:
        login(m, m.home)
        ok(hostward(["quotas", "add", "--edition", "premium", "--count", "1"], m.home))
        token = as_json(hostward(["token", "create", "--json"], m.home))
        for name in ("cli-a", "cli-b"):
            enroll_agent(token, tmp_path, name, m.home, procs=procs).start()

        def servers() -> dict[str, dict[str, Any]]:
            listed = as_json(hostward(["servers", "list", "--json"], m.home))
            return {s.get("agent_name") or s["name"]: s for s in listed}

        def both_online() -> dict[str, dict[str, Any]] | None:
            listed = servers()
            states = [listed.get(name, {}).get("agent_status") for name in ("cli-a", "cli-b")]
            return listed if states == ["online", "online"] else None

        online = wait_for("both agents online", both_online, 30)
        first, second = online["cli-a"]["id"], online["cli-b"]["id"]

        ok(hostward(["protection", "enable", first, "--edition", "premium"], m.home))
        after = servers()["cli-a"]
        assert after["protection_status"] == "opened"
        assert after["edition"] == "premium"
        assert after["quota_id"]

        scans = as_json(hostward(["scans", "list", "--server", first, "--json"], m.home))
        assert [(s["kind"], s["trigger"]) for s in scans] == [("full", "enable")]
        wait_for(
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
