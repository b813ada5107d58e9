"""``hostward wtp ...``: web tamper protection on the manager (servers, enable/disable, configuration,
directories, tamper events). ``hostward wtp exec -- CMD`` (agent side, ``wtp_exec_cmd``) joins this
group in ``hostward.cli.main``.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path
from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_record, print_table, say, warn
from hostward.cli.resolve import resolve_server

app = typer.Typer(help="Web tamper protection: servers, configuration, tamper events.", no_args_is_help=True)
config_app = typer.Typer(
    help="A server's WTP configuration (directories, privileged, schedule).", no_args_is_help=True
)
app.add_typer(config_app, name="config")

SERVER_COLUMNS: list[Column] = [
    ("ID", "server_id"),
    ("Server", "server_name"),
    ("Agent", "agent_status"),
    ("WTP", lambda s: "on" if s.get("wtp_enabled") else "off"),
    ("State", "state"),
    ("Dirs", "dirs"),
    ("Suspended", "dirs_suspended"),
    ("Tampers", "tamper_count"),
    ("Last tamper", "last_tamper_at"),
    ("Message", "message"),
]
EVENT_COLUMNS: list[Column] = [
    ("Time", "occurred_at"),
    ("Server", lambda e: e.get("server_name") or e.get("server_id")),
    ("Path", "path"),
    ("Action", "action"),
    ("Outcome", "outcome"),
    ("Process", lambda e: _process(e)),
    ("ms", "latency_ms"),
]


def _process(event: dict[str, Any]) -> str | None:
    exe = event.get("process_exe")
    if not exe:
        return None
    pid, user = event.get("process_pid"), event.get("process_user")
    return f"{exe} (pid {pid}{', ' + user if user else ''})"


def report(results: Any, names: dict[str, str], verb: str) -> None:
    """One line per server; exit 1 when any server was refused."""
    if not isinstance(results, dict) or not isinstance(results.get("results"), list):
        raise CliError("the manager's answer has no results list")
    failed = 0
    for result in results["results"]:
        name = names.get(str(result.get("server_id")), str(result.get("server_id")))
        if result.get("ok"):
            quota = f" (quota {result['quota_id']})" if result.get("quota_id") else ""
            say(f"{name}: {verb}{quota}")
        else:
            failed += 1
            reason = " ".join(str((result.get("error") or {}).get("message") or "refused").split())
            warn(f"error: {reason}" if name in reason else f"error: {name}: {reason}")
    if failed:
        raise typer.Exit(1)


@app.command("servers")
def wtp_servers(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Servers with WTP enabled or configured: state, directories, static tamper counts."""
    with ApiClient.from_credentials() as client:
        servers = client.list_all("/wtp/servers")
    if as_json:
        print_json(servers)
        return
    print_table(servers, SERVER_COLUMNS, title="Web tamper protection")


@app.command("enable")
def wtp_enable(
    servers: list[str] = typer.Argument(..., help="Server ids or names."),
    quota: str | None = typer.Option(None, "--quota", help="A specific idle wtp quota (one server only)."),
) -> None:
    """Enable WTP (binds a wtp quota; includes premium). Configure directories with `wtp config set`."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        body: dict[str, Any] = {"server_ids": [s["id"] for s in found]}
        if quota:
            body["quota_id"] = quota
        results = client.post("/wtp/enable", body)
    report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "web tamper protection enabled")


@app.command("disable")
def wtp_disable(servers: list[str] = typer.Argument(..., help="Server ids or names.")) -> None:
    """Disable WTP: everything is unlocked, the quota freed, the configuration kept."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        results = client.post("/wtp/disable", {"server_ids": [s["id"] for s in found]})
    report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "web tamper protection disabled")


@config_app.command("show")
def wtp_config_show(
    server: str = typer.Argument(..., help="Server id or name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the shape `config set` takes)."),
) -> None:
    """Show a server's WTP configuration."""
    with ApiClient.from_credentials() as client:
        config = client.get(f"/wtp/servers/{resolve_server(client, server)['id']}/config")
    if as_json:
        print_json(config)
        return
    print_record(config, title="WTP configuration", skip=("dirs", "schedule"))
    print_table(
        config.get("dirs") or [],
        [
            ("Directory", "path"),
            ("Suspended", "suspended"),
            ("Excluded subdirs", lambda d: "; ".join(d.get("excluded_subdirs") or [])),
            ("Excluded types", lambda d: "; ".join(d.get("excluded_types") or [])),
            ("Excluded paths", lambda d: "; ".join(d.get("excluded_paths") or [])),
        ],
        title="Protected directories",
    )
    schedule = config.get("schedule") or {}
    windows = ", ".join(f"{w['start']}-{w['end']}" for w in schedule.get("windows") or []) or "none"
    say(
        f"schedule: {'on' if schedule.get('enabled') else 'off'}; windows {windows}; "
        f"weekdays {','.join(str(d) for d in schedule.get('weekdays') or [])}"
    )


@config_app.command("set")
def wtp_config_set(
    server: str = typer.Argument(..., help="Server id or name."),
    file: Path = typer.Option(..., "--file", help="JSON file with the whole configuration ('-' = stdin)."),
) -> None:
    """Replace a server's WTP configuration with the JSON in FILE (see `wtp config show --json`)."""
    import sys

    try:
        raw = sys.stdin.read() if str(file) == "-" else file.read_text()
        body = json.loads(raw)
    except OSError as exc:
        raise CliError(f"{file}: {exc.strerror or exc}", exit_code=2) from exc
    except ValueError as exc:
        raise CliError(f"{file}: not valid JSON: {exc}", exit_code=2) from exc
    if not isinstance(body, dict):
        raise CliError(f"{file}: expected a JSON object", exit_code=2)
    for key in ("server_id", "enabled"):
        body.pop(key, None)  # what `config show --json` prints besides the configuration
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        saved = client.put(f"/wtp/servers/{found['id']}/config", body)
    say(
        f"{found.get('name')}: WTP configuration saved ({len(saved.get('dirs') or [])} protected directories)"
    )


def _dir_action(server: str, path: str, action: str) -> None:
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        client.post(f"/wtp/servers/{found['id']}/directories/{action}", {"path": path})
    say(f"{found.get('name')}: {path} {'suspended' if action == 'suspend' else 'protected again'}")


@app.command("suspend")
def wtp_suspend(
    server: str = typer.Argument(..., help="Server id or name."),
    path: str = typer.Argument(..., help="A protected directory of that server."),
) -> None:
    """Suspend protection of one directory (it is unlocked until resumed)."""
    _dir_action(server, path, "suspend")


@app.command("resume")
def wtp_resume(
    server: str = typer.Argument(..., help="Server id or name."),
    path: str = typer.Argument(..., help="A suspended directory of that server."),
) -> None:
    """Resume protection of a suspended directory."""
    _dir_action(server, path, "resume")


@app.command("events")
def wtp_events(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    path: str | None = typer.Option(None, "--path", help="Only paths or processes containing this text."),
    limit: int = typer.Option(200, "--limit", min=1, max=100_000, help="Newest N events."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Tamper events (newest first): path, action, outcome, process."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        events = list(islice(client.iter_items("/wtp/events", server_id=server_id, q=path), limit))
    if as_json:
        print_json(events)
        return
    print_table(events, EVENT_COLUMNS, title="Tamper events")


@app.command("restore-remote")
def wtp_restore_remote(
    server: str = typer.Argument(..., help="Server id or name."),
    path: str = typer.Argument(..., help="File or directory to restore from the manager's backup copy."),
) -> None:
    """Restore PATH from the manager's copy of the backup (when the local backup is gone)."""
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        result = client.post(f"/wtp/servers/{found['id']}/restore-remote", {"path": path})
    say(f"{found.get('name')}: restore of {path} queued (command {result.get('command_id')})")
