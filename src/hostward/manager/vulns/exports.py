"""Vulnerability exports (API and console): the vulnerability view, the server view and the findings."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.manager.risk.export import Column, check_export, collect, export_response, row_fields
from hostward.manager.vulns import service
from hostward.manager.vulns.models import VULN_SEVERITIES

MAX_EXPORT = 30_000  # the reference's limit
VIEWS = ("vulns", "servers", "findings")


def _by_severity(severity: str) -> Callable[[dict[str, Any]], int]:
    return lambda row: int(row["by_severity"].get(severity, 0))


VULN_COLUMNS: list[Column] = [
    ("Vulnerability", "vuln_id"),
    ("Priority", "severity"),
    ("CVSS", "cvss_score"),
    ("Packages", "packages"),
    ("Unfixed servers", "unfixed_servers"),
    ("Ignored", "ignored"),
    ("Fixed", "fixed"),
    ("Last seen", "last_seen"),
    ("Summary", "summary"),
]
SERVER_COLUMNS: list[Column] = [
    ("Server", "server_name"),
    ("Server ID", "server_id"),
    ("Importance", "asset_importance"),
    ("Unfixed", "unfixed"),
    *[(s.capitalize(), _by_severity(s)) for s in VULN_SEVERITIES],
    ("Ignored", "ignored"),
    ("Fixed", "fixed"),
    ("Last scan", "last_scan_at"),
]
FINDING_COLUMNS: list[Column] = [
    ("Finding ID", "id"),
    ("Server", "server_name"),
    ("Vulnerability", "vuln_id"),
    ("Other IDs", lambda r: r["ids"][1:]),
    ("Priority", "severity"),
    ("CVSS", "cvss_score"),
    ("Package", "package"),
    ("Binaries", "binaries"),
    ("Installed", "installed_version"),
    ("Fixed in", "fixed_version"),
    ("Status", "status"),
    ("Fix status", "fix_status"),
    ("Fix detail", "fix_detail"),
    ("Fix command", "fix_command"),
    ("Handled by", "handled_by"),
    ("Remark", "remark"),
    ("First seen", "first_seen"),
    ("Last seen", "last_seen"),
    ("Summary", "summary"),
]
_FINDING_FIELDS = [
    *(key for _, key in FINDING_COLUMNS if isinstance(key, str) and key != "server_name"),
    *("ids", "server_id", "cves"),
]


def export(
    session: Session,
    *,
    view: str,
    fmt: str | None,
    now: datetime,
    region: str | None = None,
    severity: str | None = None,
    status: str | None = None,
    server_id: str | None = None,
    vuln_id: str | None = None,
    q: str | None = None,
) -> Response:
    """``view`` rows (filtered like the lists) as CSV or JSON, at most ``MAX_EXPORT``."""
    fmt = check_export(fmt, view, VIEWS)
    if view == "vulns":
        rows = collect(
            lambda o, n: service.list_vulnerabilities(
                session, region=region, severity=severity, q=q, offset=o, limit=n
            ),
            MAX_EXPORT,
        )
        return export_response(rows, VULN_COLUMNS, fmt, "vulnerabilities", now)
    if view == "servers":
        rows = collect(
            lambda o, n: service.list_server_view(session, region=region, q=q, offset=o, limit=n), MAX_EXPORT
        )
        return export_response(rows, SERVER_COLUMNS, fmt, "vulnerability-servers", now)
    pairs = collect(
        lambda o, n: service.list_findings(
            session,
            server_id=server_id,
            vuln_id=vuln_id,
            status=status,
            severity=severity,
            region=region,
            q=q,
            offset=o,
            limit=n,
        ),
        MAX_EXPORT,
    )
    rows = [row_fields(f, _FINDING_FIELDS, name) for f, name in pairs]
    return export_response(rows, FINDING_COLUMNS, fmt, "vulnerability-findings", now)
