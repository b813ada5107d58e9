"""``hostward policies list|show|copy|set|apply|delete``."""

from __future__ import annotations

import json
from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_record, print_table, say
from hostward.cli.resolve import resolve_policy_group, resolve_server

app = typer.Typer(help="Policy groups and their policies.", no_args_is_help=True)

GROUP_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Edition", "edition"),
    ("OS", "os"),
    ("Default", "is_default"),
    ("View only", "view_only"),
    ("Copyable", "copyable"),
    ("Version", "version"),
    ("Servers", "host_num"),
]


def parse_setting(item: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it is JSON (numbers, true, lists), else as text."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--set expects KEY=VALUE, got {item!r}", exit_code=2)
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


@app.command("list")
def policies_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List policy groups."""
    with ApiClient.from_credentials() as client:
        groups = client.list_all("/policy-groups")
    if as_json:
        print_json(groups)
        return
    print_table(groups, GROUP_COLUMNS, title="Policy groups")


@app.command("show")
def policies_show(
    group: str = typer.Argument(..., help="Policy group id or name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a policy group and each policy's state and settings."""
    with ApiClient.from_credentials() as client:
        detail = client.get(f"/policy-groups/{resolve_policy_group(client, group)['id']}")
    if as_json:
        print_json(detail)
        return
    print_record(detail, title=f"Policy group {detail.get('name')}", skip=("policies",))
    print_table(
        detail.get("policies") or [],
        [("Policy", "key"), ("Title", "title"), ("Enabled", "enabled"), ("Settings", "settings")],
        title="Policies",
    )


@app.command("copy")
def policies_copy(
    group: str = typer.Argument(..., help="Policy group to copy (id or name)."),
    name: str = typer.Option(..., "--name", help="Name of the new group."),
    description: str | None = typer.Option(None, "--description"),
) -> None:
    """Copy a copyable group (e.g. the premium default) into a custom group."""
    body: dict[str, Any] = {"name": name}
    if description:
        body["description"] = description
    with ApiClient.from_credentials() as client:
        created = client.post(f"/policy-groups/{resolve_policy_group(client, group)['id']}/copy", body)
    say(f"created policy group {created.get('name')} ({created.get('id')})")


@app.command("set")
def policies_set(
    group: str = typer.Argument(..., help="Policy group id or name."),
    key: str = typer.Argument(..., help="Policy key (see `hostward policies show`)."),
    enabled: bool | None = typer.Option(None, "--enable/--disable", help="Turn the policy on or off."),
    settings: list[str] | None = typer.Option(
        None, "--set", help="Setting KEY=VALUE (repeatable; JSON values such as 5 or true are typed)."
    ),
) -> None:
    """Change one policy of a group (reaches online agents within a minute)."""
    body: dict[str, Any] = {}
    if enabled is not None:
        body["enabled"] = enabled
    if settings:
        body["settings"] = dict(parse_setting(item) for item in settings)
    if not body:
        raise CliError("nothing to change: give --enable/--disable and/or --set KEY=VALUE", exit_code=2)
    with ApiClient.from_credentials() as client:
        group_id = resolve_policy_group(client, group)["id"]
        client.patch(f"/policy-groups/{group_id}/policies/{key}", body)
    say(f"policy {key} updated in group {group}")


@app.command("apply")
def policies_apply(
    group: str = typer.Argument(..., help="Policy group id or name."),
    servers: list[str] = typer.Argument(..., help="Server ids or names."),
) -> None:
    """Apply a policy group to servers."""
    with ApiClient.from_credentials() as client:
        group_id = resolve_policy_group(client, group)["id"]
        found = [resolve_server(client, ref) for ref in servers]
        client.post(f"/policy-groups/{group_id}/apply", {"server_ids": [s["id"] for s in found]})
    say(f"policy group {group} applied to {len(found)} server(s)")


@app.command("delete")
def policies_delete(group: str = typer.Argument(..., help="Policy group id or name.")) -> None:
    """Delete a custom policy group (refused while it is deployed)."""
    with ApiClient.from_credentials() as client:
        group_id = resolve_policy_group(client, group)["id"]
        client.delete(f"/policy-groups/{group_id}")
    say(f"deleted policy group {group}")
