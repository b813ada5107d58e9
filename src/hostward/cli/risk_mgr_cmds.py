"""Risk results on the manager: ``hostward vulns import|feeds|list``, ``hostward baseline results``
(fix, verify, history and exports: ``risk_actions_cmds``).

``vulns import PATH`` uploads a file as it is (OSV JSON, a list of OSV records, ``.json.gz``, an OSV zip
archive or the Debian security tracker JSON); a directory is packed into a zip of its ``*.json`` /
``*.json.gz`` files first. Malformed entries are printed as warnings (file and entry) and do not stop
the import; the command fails only when nothing could be imported.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import typer

from hostward.cli.client import ApiClient
from hostward.cli.errors import CliError
from hostward.cli.output import Column, print_json, print_table, say, warn
from hostward.cli.resolve import resolve_server

MAX_WARNINGS = 20

FINDING_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Server", "server_name"),
    ("Vulnerability", "vuln_id"),
    ("Severity", "severity"),
    ("CVSS", "cvss_score"),
    ("Package", "package"),
    ("Installed", "installed_version"),
    ("Fixed in", "fixed_version"),
    ("Status", "status"),
    ("Fix status", lambda r: r.get("fix_status") or ""),
    ("Fix", "fix_command"),
]
FEED_COLUMNS: list[Column] = [
    ("ID", "id"),
    ("Name", "name"),
    ("Advisories", "advisories"),
    ("Problems", "issue_count"),
    ("Imported", "imported_at"),
    ("By", "imported_by"),
]
RESULT_COLUMNS: list[Column] = [
    ("Server", "server_name"),
    ("Policy", "policy_id"),
    ("Check", "check_id"),
    ("Severity", "severity"),
    ("Result", lambda r: "ignored" if r.get("ignored") else r.get("result")),
    ("Title", "title"),
    ("Reason", "reason"),
]


def _zip_directory(directory: Path, target: Path) -> int:
    count = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(directory):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith((".json", ".json.gz")):
                    path = Path(dirpath, name)
                    zf.write(path, str(path.relative_to(directory)))
                    count += 1
    return count


def vulns_import(
    path: Path = typer.Argument(..., help="Feed file, directory or archive."),
    name: str | None = typer.Option(
        None, "--name", help="Name shown for this feed (default: the file name)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Import vulnerability data into the manager (agents receive the advisories about their packages)."""
    if not path.exists():
        raise CliError(f"{path}: no such file or directory")
    label = name or path.resolve().name
    with tempfile.TemporaryDirectory(prefix="hostward-feed-") as tmp:
        upload = path
        if path.is_dir():
            upload = Path(tmp) / f"{label}.zip"
            if _zip_directory(path, upload) == 0:
                raise CliError(f"{path}: no *.json or *.json.gz files in this directory")
        with ApiClient.from_credentials() as client:
            feed: dict[str, Any] = client.upload("/vulns/feeds", upload, name=label)
    if as_json:
        print_json(feed)
        return
    for issue in feed.get("issues", [])[:MAX_WARNINGS]:
        warn(
            f"feed problem (entry skipped): {issue.get('file')}: {issue.get('entry')}: {issue.get('message')}"
        )
    more = int(feed.get("issue_count", 0)) - min(MAX_WARNINGS, len(feed.get("issues", [])))
    if more > 0:
        warn(f"... and {more} more problem(s); see `hostward vulns feeds --json`")
    say(
        f"imported {feed.get('advisories')} advisories from {feed.get('name')} "
        f"({feed.get('files')} file(s), {feed.get('issue_count')} problem(s), {feed.get('seconds')} s)"
    )


def vulns_feeds(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List imported vulnerability feeds."""
    with ApiClient.from_credentials() as client:
        rows = client.get("/vulns/feeds")
    if as_json:
        print_json(rows)
        return
    print_table(rows, FEED_COLUMNS, title="Vulnerability feeds")


def vulns_list(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    status: str | None = typer.Option(None, "--status", help="unfixed, ignored or fixed."),
    severity: str | None = typer.Option(None, "--severity", help="critical, high, medium, low or unknown."),
    vuln: str | None = typer.Option(None, "--vuln", help="A vulnerability id (CVE or advisory id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List vulnerability findings (one vulnerable package on one server), most severe first."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        rows = client.list_all(
            "/vulns/findings", server_id=server_id, status=status, severity=severity, vuln_id=vuln
        )
    if as_json:
        print_json(rows)
        return
    print_table(rows, FINDING_COLUMNS, title="Vulnerabilities")


def baseline_results(
    server: str | None = typer.Option(None, "--server", help="Server id or name."),
    result: str | None = typer.Option(None, "--result", help="passed, failed, not_applicable or ignored."),
    check: str | None = typer.Option(None, "--check", help="A check id."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Baseline check results per server, failed first."""
    with ApiClient.from_credentials() as client:
        server_id = resolve_server(client, server)["id"] if server else None
        rows = client.list_all("/baseline/results", server_id=server_id, result=result, check_id=check)
        stats = client.get("/baseline/statistics") if not as_json else None
    if as_json:
        print_json(rows)
        return
    print_table(rows, RESULT_COLUMNS, title="Baseline checks")
    if stats:
        rate = stats.get("pass_rate")
        say(
            f"{stats.get('failed')} failed, {stats.get('ignored')} ignored, {stats.get('passed')} passed, "
            f"{stats.get('not_applicable')} not applicable"
            + (f"; pass rate {rate}%" if rate is not None else "")
        )


def attach(vulns: typer.Typer, baseline: typer.Typer) -> None:
    """Add the manager commands next to the standalone ``vulns scan`` and ``baseline run``."""
    vulns.command("import")(vulns_import)
    vulns.command("feeds")(vulns_feeds)
    vulns.command("list")(vulns_list)
    baseline.command("results")(baseline_results)
    from hostward.cli import risk_actions_cmds

    risk_actions_cmds.attach(vulns, baseline)
