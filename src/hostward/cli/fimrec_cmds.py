"""``hostward fim ...``: the manager's change records (``changes``, ``hosts``, ``accept``) next to the
standalone ``init`` / ``check`` of ``hostward.cli.fim_cmds``.

The standalone commands import the agent's FIM engine; ``FimGroup`` loads them only when one of them (or
the group's help) is asked for, so other commands never import agent code.
"""

from __future__ import annotations

import importlib
from itertools import islice
from typing import Any

import typer
from typer.core import TyperGroup

from hostward.cli.client import ApiClient
from hostward.cli.output import Column, print_json, print_table, say
from hostward.cli.resolve import resolve_server

STANDALONE = ("hostward.cli.fim_cmds", "fim_app")


class FimGroup(TyperGroup):
    """The ``fim`` group: its own commands, plus the standalone ones loaded on first use.

    (``ctx`` and commands are typed ``Any``: typer's click types live in a private module.)
    """

    _standalone: TyperGroup | None = None

    def _loaded(self) -> TyperGroup:
        if FimGroup._standalone is None:
            module, attr = STANDALONE
            group = typer.main.get_command(getattr(importlib.import_module(module), attr))
            if not isinstance(group, TyperGroup):
                raise TypeError(f"{module}.{attr} is not a command group")
            FimGroup._standalone = group
        return FimGroup._standalone

    def list_commands(self, ctx: Any) -> list[str]:
        own = super().list_commands(ctx)
        return [*(c for c in self._loaded().list_commands(ctx) if c not in own), *own]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        return self._loaded().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=FimGroup,
    help="File integrity monitoring: standalone baseline/check (like AIDE) and the manager's change records.",
    no_args_is_help=True,
)

CHANGE_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Server", lambda c: c.get("server_name") or c.get("server_id")),
    ("Path", "path"),
    ("Type", "change_type"),
    ("Action", "action"),
    ("Change", "description"),
    ("Process", lambda c: _process(c)),
    ("Classification", "classification"),
    ("Time", "occurred_at"),
]

HOST_COLUMNS: list[Column] = [
    ("ID", "server_id"),
    ("Server", "server_name"),
    ("Edition", "edition"),
    ("Changes", "total"),
    ("Alarmed", "alarmed"),
    ("Package updates", "package_updates"),
    ("Accepted", "accepted"),
    ("Last change", "last_change_at"),
    ("Last path", "last_change_path"),
]


def _process(change: dict[str, Any]) -> str | None:
    exe = change.get("process_exe")
    if not exe:
        return None
    pid, user = change.get("process_pid"), change.get("process_user")
    return f"{exe} (pid {pid}{', ' + user if user else ''})"


@app.command("changes")
def fim_changes(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    action: str | None = typer.Option(
        None, "--action", help="create, modify, delete, attributes, move or accept."
    ),
    classification: str | None = typer.Option(
        None, "--classification", help="alarmed, package_update, accepted or baseline."
    ),
    path: str | None = typer.Option(None, "--path", help="Only paths containing this text."),
    limit: int = typer.Option(200, "--limit", min=1, max=100_000, help="Newest N records."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """File change records reported by the agents (newest first)."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        changes = list(
            islice(
                client.iter_items(
                    "/fim/changes", server_id=server_id, action=action, classification=classification, q=path
                ),
                limit,
            )
        )
    if as_json:
        print_json(changes)
        return
    print_table(changes, CHANGE_COLUMNS, title="File changes")


@app.command("hosts")
def fim_hosts(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Servers with file integrity monitoring: change counts and the last change."""
    with ApiClient.from_credentials() as client:
        hosts = client.list_all("/fim/hosts")
    if as_json:
        print_json(hosts)
        return
    print_table(hosts, HOST_COLUMNS, title="FIM servers")


@app.command("accept")
def fim_accept(
    server: str = typer.Argument(..., help="Server id or name."),
    paths: list[str] = typer.Argument(..., help="Absolute paths whose current state becomes the baseline."),
    remark: str = typer.Option("", "--remark", help="Why (kept in Handling History)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Accept the current state of PATH... on SERVER as the new baseline (handles their FIM alarms)."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"]
        result = client.post("/fim/accept", {"server_id": server_id, "paths": paths, "remark": remark})
    if as_json:
        print_json(result)
        return
    say(
        f"accept queued for {len(result.get('paths', []))} path(s) (command {result.get('command_id')}): "
        f"{result.get('records_accepted', 0)} record(s) accepted, {result.get('alarms_handled', 0)} alarm(s) "
        "handled"
    )
