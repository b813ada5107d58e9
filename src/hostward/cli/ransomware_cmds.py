"""``hostward ransomware ...``: ransomware prevention policies, servers, snapshots and restore."""

from __future__ import annotations

from itertools import islice
from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say
from hostward.cli.resolve import resolve_server
from hostward.cli.wtp_cmds import report

app = typer.Typer(
    help="Ransomware prevention (premium and WTP): policies, servers, snapshots.", no_args_is_help=True
)

POLICY_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Protected", lambda p: "; ".join(p.get("protected_dirs") or [])),
    ("Excluded", lambda p: "; ".join(p.get("excluded_dirs") or [])),
    ("Types", lambda p: len(p.get("file_types") or [])),
    ("Action", "action"),
    ("Bait", "bait"),
    ("Snapshots", lambda p: f"every {p.get('snapshot_interval_h')} h, keep {p.get('snapshot_keep')}"),
    ("Servers", "servers"),
]
SERVER_COLUMNS: list[Column] = [
    ("ID", "server_id"),
    ("Server", "server_name"),
    ("Edition", "edition"),
    ("Enabled", "enabled"),
    ("Policy", "policy_name"),
    ("State", "state"),
    ("Baits", "baits"),
    ("Snapshots", "snapshots"),
    ("Last snapshot", "last_snapshot_at"),
]
SNAPSHOT_COLUMNS: list[Column] = [
    ("Snapshot", "snapshot_id"),
    ("Server", "server_name"),
    ("Taken", "taken_at"),
    ("Files", "files"),
    ("Bytes", "bytes"),
]


def _policy(client: ApiClient, ref: str) -> dict[str, Any]:
    policies = client.get("/ransomware/policies")
    for p in policies:
        if ref in (p.get("id"), p.get("name")):
            return dict(p)
    raise CliError(f"no ransomware policy {ref!r} (see `hostward ransomware policies`)")


@app.command("policies")
def rw_policies(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List ransomware prevention policies."""
    with ApiClient.from_credentials() as client:
        policies = client.get("/ransomware/policies")
    if as_json:
        print_json(policies)
        return
    print_table(policies, POLICY_COLUMNS, title="Ransomware policies")


@app.command("policy-create")
def rw_policy_create(
    name: str = typer.Option(..., "--name"),
    protect: list[str] = typer.Option(..., "--protect", help="Protected directory (repeatable, ≤20)."),
    exclude: list[str] | None = typer.Option(None, "--exclude", help="Excluded directory (repeatable, ≤20)."),
    types: str | None = typer.Option(None, "--types", help="Protected file types, ';' or ',' separated."),
    action: str = typer.Option("alarm", "--action", help="alarm or alarm_and_isolate."),
    bait: bool = typer.Option(True, "--bait/--no-bait", help="Plant bait files."),
    interval: int = typer.Option(24, "--snapshot-interval-h", help="Hours between snapshots."),
    keep: int = typer.Option(7, "--snapshot-keep", help="Snapshots kept."),
) -> None:
    """Create a ransomware prevention policy."""
    body: dict[str, Any] = {
        "name": name,
        "protected_dirs": protect,
        "excluded_dirs": exclude or [],
        "action": action,
        "bait": bait,
        "snapshot_interval_h": interval,
        "snapshot_keep": keep,
    }
    if types:
        body["file_types"] = [t.strip() for t in types.replace(",", ";").split(";") if t.strip()]
    with ApiClient.from_credentials() as client:
        created = client.post("/ransomware/policies", body)
    say(f"created ransomware policy {created.get('name')} ({created.get('id')})")


@app.command("policy-delete")
def rw_policy_delete(policy: str = typer.Argument(..., help="Policy id or name.")) -> None:
    """Delete a policy no server uses."""
    with ApiClient.from_credentials() as client:
        found = _policy(client, policy)
        client.delete(f"/ransomware/policies/{found['id']}")
    say(f"deleted ransomware policy {found.get('name')}")


@app.command("enable")
def rw_enable(
    servers: list[str] = typer.Argument(..., help="Server ids or names (premium or WTP edition)."),
    policy: str = typer.Option(..., "--policy", help="Policy id or name."),
) -> None:
    """Enable ransomware prevention with POLICY (or switch the servers to it)."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        pid = _policy(client, policy)["id"]
        results = client.post(
            "/ransomware/enable", {"server_ids": [s["id"] for s in found], "policy_id": pid}
        )
    report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "ransomware prevention enabled")


@app.command("disable")
def rw_disable(servers: list[str] = typer.Argument(..., help="Server ids or names.")) -> None:
    """Disable ransomware prevention (baits removed by the agent; snapshots stay)."""
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        results = client.post("/ransomware/disable", {"server_ids": [s["id"] for s in found]})
    report(results, {s["id"]: str(s.get("name") or s["id"]) for s in found}, "ransomware prevention disabled")


@app.command("servers")
def rw_servers(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Premium and WTP servers: prevention state, policy, baits, snapshots."""
    with ApiClient.from_credentials() as client:
        servers = client.list_all("/ransomware/servers")
    if as_json:
        print_json(servers)
        return
    print_table(servers, SERVER_COLUMNS, title="Ransomware prevention")


@app.command("snapshots")
def rw_snapshots(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    limit: int = typer.Option(200, "--limit", min=1, max=100_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Snapshots of the protected directories the agents reported (newest first)."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        snaps = list(islice(client.iter_items("/ransomware/snapshots", server_id=server_id), limit))
    if as_json:
        print_json(snaps)
        return
    print_table(snaps, SNAPSHOT_COLUMNS, title="Snapshots")


@app.command("restore")
def rw_restore(
    server: str = typer.Argument(..., help="Server id or name."),
    snapshot: str = typer.Argument(..., help="Snapshot id (see `ransomware snapshots`)."),
    path: str | None = typer.Option(None, "--path", help="Only what lies under this path."),
) -> None:
    """Restore the protected directories of SERVER from SNAPSHOT (files created since are moved aside)."""
    body: dict[str, Any] = {"snapshot_id": snapshot}
    if path:
        body["path"] = path
    with ApiClient.from_credentials() as client:
        found = resolve_server(client, server)
        result = client.post("/ransomware/restore", {"server_id": found["id"], **body})
    say(f"{found.get('name')}: restore of snapshot {snapshot} queued (command {result.get('command_id')})")
