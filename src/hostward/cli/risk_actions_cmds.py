"""Acting on risk results from the CLI: ``vulns fix|verify|history``, and exports of vulnerabilities,
baseline results and alarms (``vulns export``, ``baseline export``, ``alarms export``) as CSV or JSON,
written by the manager exactly as the console's download links give them."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from hostward.cli.client import API_PREFIX, ApiClient, Credentials
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say, warn
from hostward.cli.resolve import resolve_server

WAIT_POLL_S = 2.0
HISTORY_COLUMNS: list[Column] = [
    ("When", "at"),
    ("Who", "actor"),
    ("Action", "action"),
    ("Finding", "target_name"),
    ("Remark / result", "remark"),
]


def _handle(body: dict[str, Any]) -> Any:
    with ApiClient.from_credentials() as client:
        return client.post("/vulns/findings/handle", body)


def vulns_fix(
    finding_ids: list[str] = typer.Argument(..., help="Finding ids (from `hostward vulns list`)."),
    yes: bool = typer.Option(
        False,
        "--yes",
        help="Acknowledge: packages are upgraded without a backup, services may restart, no rollback.",
    ),
    remark: str = typer.Option("", "--remark", help="Remark kept in the handling history."),
    wait: int = typer.Option(0, "--wait", help="Wait up to this many seconds for the fix results."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One-click fix: the agent upgrades the vulnerable packages and re-checks them."""
    if not yes:
        raise CliError(
            "a fix upgrades packages without a backup and may restart services; run again with --yes"
        )
    answer = _handle({"finding_ids": finding_ids, "action": "fix", "acknowledge": True, "remark": remark})
    results = answer.get("results", [])
    failed = [r for r in results if not r.get("ok")]
    for r in failed:
        warn(f"{r['id']}: {(r.get('error') or {}).get('message', 'refused')}")
    started = [r["id"] for r in results if r.get("ok")]
    final: list[dict[str, Any]] = []
    if started and wait > 0:
        final = _wait_fixes(started, wait)
    if as_json:
        print_json({**answer, "findings": final})
    elif started:
        say(f"fixing {len(started)} finding(s) on {len(answer.get('commands', {}))} server(s)")
        for f in final:
            say(f"{f['id']}: {f.get('fix_status')}: {f.get('fix_detail') or ''}".rstrip(": "))
    if failed or any(f.get("fix_status") in ("failed", "fixing") for f in final):
        raise typer.Exit(1)


def _wait_fixes(ids: list[str], wait: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + wait
    rows: list[dict[str, Any]] = []
    with ApiClient.from_credentials() as client:
        while True:
            rows = [client.get(f"/vulns/findings/{i}") for i in ids]
            if all(r.get("fix_status") != "fixing" for r in rows) or time.monotonic() >= deadline:
                return rows
            time.sleep(min(WAIT_POLL_S, max(0.0, deadline - time.monotonic())))


def vulns_verify(
    finding_ids: list[str] = typer.Argument(..., help="Finding ids."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Verify findings: rescan their servers (what a rescan no longer finds becomes fixed)."""
    answer = _handle({"finding_ids": finding_ids, "action": "verify"})
    if as_json:
        print_json(answer)
        return
    say(f"vulnerability scan queued on {len(answer.get('scans', []))} server(s)")


def vulns_history(
    vuln_id: str = typer.Argument(..., help="A vulnerability id (CVE or advisory id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Handling history of a vulnerability: ignore, unignore, fix and its outcome, verify, whitelist."""
    with ApiClient.from_credentials() as client:
        rows = client.list_all(f"/vulns/{vuln_id}/history")
    if as_json:
        print_json(rows)
        return
    print_table(rows, HISTORY_COLUMNS, title=f"Handling history of {vuln_id}")


def download(path: str, params: dict[str, Any], output: Path | None) -> None:
    """GET an export from the API and write it to ``output`` (or stdout) as the manager produced it."""
    creds = Credentials.load()
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    try:
        with httpx.Client(
            base_url=creds.url + API_PREFIX,
            headers={"Authorization": f"Bearer {creds.token}"},
            verify=creds.ca_cert or True,
            timeout=300.0,
        ) as http:
            response = http.get(path, params=clean)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the manager at {creds.url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        raise CliError(f"export refused ({response.status_code}): {message}")
    rows = response.headers.get("x-hostward-rows", "?")
    if output is None:
        sys.stdout.write(response.content.decode("utf-8-sig"))
        sys.stdout.flush()
        return
    output.write_bytes(response.content)
    say(f"wrote {rows} row(s) to {output}")


FORMAT = typer.Option("csv", "--format", help="csv or json.")
OUTPUT = typer.Option(None, "--output", "-o", help="File to write (default: standard output).")


def _server_id(server: str | None) -> str | None:
    if not server:
        return None
    with ApiClient.from_credentials() as client:
        return str(resolve_server(client, server)["id"])


def vulns_export(
    view: str = typer.Option("findings", "--view", help="findings, vulns (vulnerability view) or servers."),
    fmt: str = FORMAT,
    output: Path | None = OUTPUT,
    server: str | None = typer.Option(None, "--server", help="Server id or name (findings)."),
    status: str | None = typer.Option(None, "--status", help="unfixed, ignored or fixed (findings)."),
    severity: str | None = typer.Option(None, "--severity", help="critical, high, medium, low, unknown."),
    vuln: str | None = typer.Option(None, "--vuln", help="A vulnerability id (findings)."),
) -> None:
    """Export vulnerabilities as CSV or JSON (at most 30,000 rows)."""
    params = {
        "view": view,
        "format": fmt,
        "server_id": _server_id(server),
        "status": status,
        "severity": severity,
        "vuln_id": vuln,
    }
    download("/vulns/export", params, output)


def baseline_export(
    view: str = typer.Option("results", "--view", help="results, checks or weak_passwords."),
    fmt: str = FORMAT,
    output: Path | None = OUTPUT,
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    result: str | None = typer.Option(None, "--result", help="passed, failed, not_applicable or ignored."),
) -> None:
    """Export baseline results, the per-check summary or weak passwords (at most 5,000 rows)."""
    params = {"view": view, "format": fmt, "server_id": _server_id(server), "result": result}
    download("/baseline/export", params, output)


def alarms_export(
    fmt: str = FORMAT,
    output: Path | None = OUTPUT,
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    status: str | None = typer.Option(None, "--status", help="Alarm status, e.g. unhandled."),
    severity: str | None = typer.Option(None, "--severity", help="critical, high, medium or low."),
    event_class: str | None = typer.Option(None, "--class", help="Event class, e.g. login_1001."),
) -> None:
    """Export alarms as CSV or JSON (at most 30,000 rows)."""
    params = {
        "format": fmt,
        "server_id": _server_id(server),
        "status": status,
        "severity": severity,
        "event_class": event_class,
    }
    download("/alarms/export", params, output)


def attach(vulns: typer.Typer, baseline: typer.Typer) -> None:
    vulns.command("fix")(vulns_fix)
    vulns.command("verify")(vulns_verify)
    vulns.command("history")(vulns_history)
    vulns.command("export")(vulns_export)
    baseline.command("export")(baseline_export)
    from hostward.cli.alarms_cmds import alarms_app

    # alarms_app is module-level: a second build of the CLI app must not add the command twice
    if not any(c.name == "export" for c in alarms_app.registered_commands):
        alarms_app.command("export")(alarms_export)
