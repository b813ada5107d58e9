"""``hostward scans start|list|show|cancel``."""

from __future__ import annotations

import typer

from hostward.cli.client import ApiClient, items_of
from hostward.cli.output import Column, print_json, print_record, print_table, say
from hostward.cli.resolve import resolve_server

app = typer.Typer(help="Detection scans.", no_args_is_help=True)

SCAN_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Server", lambda s: s.get("server_name") or s.get("server_id")),
    ("Kind", "kind"),
    ("Trigger", "trigger"),
    ("Status", "status"),
    ("Progress", lambda s: f"{s['progress']}%" if s.get("progress") is not None else None),
    ("Created", "created_at"),
    ("Finished", "finished_at"),
]


@app.command("start")
def scans_start(
    servers: list[str] = typer.Argument(..., help="Server ids or names."),
    kind: str = typer.Option(
        "full",
        "--kind",
        help="full (comprehensive detection) or one scan kind: malware (quick virus scan), malware_full, "
        "malware_custom (with --path), webshell, vulnerability, baseline, ...",
    ),
    paths: list[str] | None = typer.Option(
        None, "--path", help="malware_custom: an absolute path to scan (repeat, at most 20)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Queue a scan now on the given servers."""
    body: dict[str, object] = {"kind": kind}
    if paths:
        body["paths"] = list(paths)
    with ApiClient.from_credentials() as client:
        found = [resolve_server(client, ref) for ref in servers]
        scans = items_of(client.post("/scans", {"server_ids": [s["id"] for s in found], **body}))
    if as_json:
        print_json(scans)
        return
    names = {s["id"]: s.get("name") or s["id"] for s in found}
    for scan in scans:
        say(f"queued {scan.get('kind')} scan {scan.get('id')} on {names.get(scan.get('server_id'), '?')}")


@app.command("list")
def scans_list(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    status: str | None = typer.Option(None, "--status", help="queued, running, succeeded, failed, ..."),
    kind: str | None = typer.Option(None, "--kind"),
    trigger: str | None = typer.Option(None, "--trigger", help="enable, schedule or manual."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List scans (newest first, as the manager orders them)."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        scans = client.list_all("/scans", server_id=server_id, status=status, kind=kind, trigger=trigger)
    if as_json:
        print_json(scans)
        return
    print_table(scans, SCAN_COLUMNS, title="Scans")


@app.command("show")
def scans_show(
    scan_id: str = typer.Argument(..., help="Scan id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show one scan with its progress and detail."""
    with ApiClient.from_credentials() as client:
        scan = client.get(f"/scans/{scan_id}")
    if as_json:
        print_json(scan)
        return
    print_record(scan, title=f"Scan {scan_id}")


@app.command("cancel")
def scans_cancel(scan_id: str = typer.Argument(..., help="Scan id.")) -> None:
    """Cancel a queued or running scan."""
    with ApiClient.from_credentials() as client:
        scan = client.post(f"/scans/{scan_id}/cancel")
    status = scan.get("status") if isinstance(scan, dict) else None
    say(f"scan {scan_id} cancelled" + (f" (status {status})" if status else ""))
