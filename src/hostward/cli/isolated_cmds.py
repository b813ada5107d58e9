"""``hostward isolated-files list|restore|delete`` and ``hostward malware auto-kill on|off|status``."""

from __future__ import annotations

import time
from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say, warn
from hostward.cli.resolve import resolve_server

isolated_files_app = typer.Typer(
    help="Files isolated in the agents' quarantine vaults: list, restore, delete.", no_args_is_help=True
)
WAIT_S = 30.0


def _state(row: dict[str, Any]) -> str:
    text = str(row.get("state"))
    if row.get("pending"):
        text += f" ({row['pending']} pending)"
    if row.get("error"):
        text += f" ({row['error']})"
    return text


def _owner(row: dict[str, Any]) -> str:
    owner = row.get("owner") or ("" if row.get("uid") is None else str(row["uid"]))
    group = row.get("group") or ("" if row.get("gid") is None else str(row["gid"]))
    return f"{owner}:{group}" if owner or group else ""


ISOLATED_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Server", lambda r: r.get("server_name") or r.get("server_id")),
    ("Path", "path"),
    ("State", _state),
    ("Owner", _owner),
    ("Mode", "mode"),
    ("Size", "size"),
    ("SHA-256", lambda r: (r.get("sha256") or "")[:16]),
    ("Reason", "reason"),
    ("Isolated", "isolated_at"),
]


@isolated_files_app.command("list")
def isolated_list(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    state: str | None = typer.Option(None, "--state", help="isolating, isolated, restored or deleted."),
    search: str | None = typer.Option(
        None, "--search", "-q", help="Part of the path, hash, vault id or server name."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List isolated files (newest change first)."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        rows = client.list_all("/isolated-files", server_id=server_id, state=state, q=search)
    if as_json:
        print_json(rows)
        return
    print_table(rows, ISOLATED_COLUMNS, title="Isolated files")


def _batch(action: str, ids: list[str], wait: bool) -> None:
    wanted = list(dict.fromkeys(ids))
    with ApiClient.from_credentials() as client:
        answer = client.post(f"/isolated-files/{action}", {"ids": wanted})
        results = answer.get("results", []) if isinstance(answer, dict) else []
        failed = [r for r in results if not r.get("ok")]
        for result in failed:
            message = (result.get("error") or {}).get("message") or "refused"
            warn(f"error: {result.get('id')}: {' '.join(str(message).split())}")
        done = [r["id"] for r in results if r.get("ok")]
        if wait and done:
            _wait(client, done, "restored" if action == "restore" else "deleted")
    verb = "restored" if action == "restore" else "deleted"
    say(f"{len(done)} file(s) {verb if wait else 'being ' + verb}")
    if failed:
        raise typer.Exit(1)


def _wait(client: ApiClient, ids: list[str], target: str) -> None:
    deadline = time.monotonic() + WAIT_S
    pending = set(ids)
    while pending:
        for file_id in sorted(pending):
            row = client.get(f"/isolated-files/{file_id}")
            if row.get("state") == target:
                pending.discard(file_id)
            elif row.get("error"):
                raise CliError(f"{row.get('path')}: {row['error']}")
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise CliError(f"{len(pending)} file(s) not confirmed by their agents within {WAIT_S:.0f} s")
        time.sleep(0.3)


@isolated_files_app.command("restore")
def isolated_restore(
    ids: list[str] = typer.Argument(..., help="Isolated-file ids (from `isolated-files list`)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the agents confirm (at most 30 s)."),
) -> None:
    """Put isolated files back at their original paths with their original owner and mode."""
    _batch("restore", ids, wait)


@isolated_files_app.command("delete")
def isolated_delete(
    ids: list[str] = typer.Argument(..., help="Isolated-file ids (from `isolated-files list`)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the agents confirm (at most 30 s)."),
) -> None:
    """Remove isolated files from the vaults for good."""
    _batch("delete", ids, wait)


def auto_kill(
    mode: str = typer.Argument(..., help="on, off or status."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The global "isolate and kill malicious programs" switch (admin to change; default off)."""
    if mode not in ("on", "off", "status"):
        raise CliError("auto-kill takes on, off or status", exit_code=2)
    with ApiClient.from_credentials() as client:
        if mode == "status":
            answer = client.get("/settings/auto-isolate-kill")
        else:
            answer = client.put("/settings/auto-isolate-kill", {"enabled": mode == "on"})
    if as_json:
        print_json(answer)
        return
    enabled = bool(isinstance(answer, dict) and answer.get("enabled"))
    say(f"isolate and kill malicious programs: {'on' if enabled else 'off'}")


def attach(malware_app: typer.Typer) -> None:
    """Add ``auto-kill`` to ``hostward malware`` (idempotent)."""
    if "auto-kill" not in {c.name for c in malware_app.registered_commands}:
        malware_app.command("auto-kill")(auto_kill)
