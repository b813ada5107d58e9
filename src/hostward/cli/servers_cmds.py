"""``hostward servers ...`` and ``hostward protection enable|disable``."""

from __future__ import annotations

from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import (
    AGENT_STATUS,
    PROTECTION_STATUS,
    Column,
    print_json,
    print_record,
    print_table,
    say,
    warn,
)
from hostward.cli.resolve import resolve_server

servers_app = typer.Typer(help="Servers (hosts with or without an agent).", no_args_is_help=True)
protection_app = typer.Typer(help="Turn protection on or off for servers.", no_args_is_help=True)

JSON_HELP = "Print JSON."

SERVER_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("IPs", "ips"),
    ("Region", "region"),
    ("Agent", lambda s: AGENT_STATUS.get(s.get("agent_status", ""), s.get("agent_status"))),
    (
        "Protection",
        lambda s: PROTECTION_STATUS.get(s.get("protection_status", ""), s.get("protection_status")),
    ),
    ("Edition", "edition"),
    ("Quota", "quota_id"),
    ("Scan", "scan_result"),
]


@servers_app.command("list")
def servers_list(
    region: str | None = typer.Option(None, "--region"),
    edition: str | None = typer.Option(None, "--edition", help="basic, enterprise, premium or wtp."),
    agent_status: str | None = typer.Option(None, "--agent-status", help="online, offline or not_installed."),
    protection_status: str | None = typer.Option(
        None, "--protection-status", help="opened, closed or protection_exception."
    ),
    scan_result: str | None = typer.Option(
        None, "--scan-result", help="undetected, scanning, clean or risk."
    ),
    group: str | None = typer.Option(None, "--group", help="Server group id."),
    importance: str | None = typer.Option(None, "--importance", help="important, common or test."),
    label: str | None = typer.Option(None, "--label"),
    search: str | None = typer.Option(None, "--search", "-q", help="Name or IP contains."),
    sort: str | None = typer.Option(
        None, "--sort", help="Sort key understood by the API, e.g. name or -name."
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """List servers (every page) with optional server-side filters."""
    with ApiClient.from_credentials() as client:
        servers = client.list_all(
            "/servers",
            region=region,
            edition=edition,
            agent_status=agent_status,
            protection_status=protection_status,
            scan_result=scan_result,
            server_group_id=group,
            asset_importance=importance,
            label=label,
            q=search,
            sort=sort,
        )
    if as_json:
        print_json(servers)
        return
    print_table(servers, SERVER_COLUMNS, title="Servers")


@servers_app.command("show")
def servers_show(
    server: str = typer.Argument(..., help="Server id or name."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Show one server."""
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        detail = client.get(f"/servers/{found['id']}")
    if as_json:
        print_json(detail)
        return
    print_record(detail, title=f"Server {detail.get('name', found['id'])}")


@servers_app.command("add")
def servers_add(
    name: str = typer.Argument(..., help="Server name."),
    ip: list[str] | None = typer.Option(None, "--ip", help="IP address (repeatable)."),
    region: str | None = typer.Option(None, "--region"),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Register a server that has no agent yet (listed as Not installed)."""
    body: dict[str, Any] = {"name": name}
    if ip:
        body["ips"] = ip
    if region:
        body["region"] = region
    with ApiClient.from_credentials() as client:
        server = client.post("/servers", body)
    if as_json:
        print_json(server)
        return
    say(f"registered server {server.get('name')} ({server.get('id')})")


@servers_app.command("delete")
def servers_delete(server: str = typer.Argument(..., help="Server id or name.")) -> None:
    """Delete a server record (frees its quota; a running agent would enroll again)."""
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        client.delete(f"/servers/{found['id']}")
    say(f"deleted server {found.get('name')} ({found['id']})")


def _report(results: Any, names: dict[str, str], verb: str) -> None:
    """Print one line per server; exit non-zero when any server was refused."""
    if not isinstance(results, dict) or not isinstance(results.get("results"), list):
        raise CliError("the manager's answer has no results list")
    failed = 0
    for result in results["results"]:
        server_id = str(result.get("server_id"))
        name = names.get(server_id, server_id)
        if result.get("ok"):
            quota = f" (quota {result['quota_id']})" if result.get("quota_id") else ""
            say(f"{name}: protection {verb}{quota}")
        else:
            failed += 1
            error = result.get("error") or {}
            reason = " ".join(str(error.get("message") or "refused").split())
            warn(f"error: {reason}" if name in reason else f"error: {name}: {reason}")
    if failed:
        raise typer.Exit(1)


@protection_app.command("enable")
def protection_enable(
    servers: list[str] = typer.Argument(..., help="Server ids or names."),
    edition: str = typer.Option(..., "--edition", help="basic, enterprise, premium or wtp."),
    quota: str | None = typer.Option(None, "--quota", help="Quota id to bind (default: any idle quota)."),
) -> None:
    """Enable protection with an edition (binds an idle quota; refused with the reason otherwise)."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        body: dict[str, Any] = {"server_ids": [s["id"] for s in found], "edition": edition}
        if quota:
            body["quota_id"] = quota
        results = client.post("/protection/enable", body)
    _report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "enabled")


@protection_app.command("disable")
def protection_disable(servers: list[str] = typer.Argument(..., help="Server ids or names.")) -> None:
    """Disable protection (frees the quota)."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        results = client.post("/protection/disable", {"server_ids": [s["id"] for s in found]})
    _report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "disabled")


@protection_app.command("switch-edition")
def protection_switch(
    servers: list[str] = typer.Argument(..., help="Server ids or names."),
    edition: str = typer.Option(..., "--edition", help="enterprise or premium."),
) -> None:
    """Switch protected servers between enterprise and premium (the old quota is freed)."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        body = {"server_ids": [s["id"] for s in found], "edition": edition}
        results = client.post("/protection/switch-edition", body)
    _report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, f"switched to {edition}")
