"""Baseline exports (API and console): per-check summary, per-server results, weak passwords."""

from __future__ import annotations

from datetime import datetime

from fastapi.responses import Response
from sqlalchemy.orm import Session

from hostward.manager.baseline import service
from hostward.manager.risk.export import Column, check_export, collect, export_response, row_fields

MAX_EXPORT = 5_000  # the reference's limit
VIEWS = ("results", "checks", "weak_passwords")

CHECK_COLUMNS: list[Column] = [
    ("Policy", "policy_name"),
    ("Check", "check_id"),
    ("Title", "title"),
    ("Risk level", "severity"),
    ("Failed servers", "failed"),
    ("Ignored", "ignored"),
    ("Passed", "passed"),
    ("Not applicable", "not_applicable"),
    ("Servers", "servers"),
    ("Last checked", "last_checked"),
]
RESULT_COLUMNS: list[Column] = [
    ("Server", "server_name"),
    ("Policy", "policy_name"),
    ("Check", "check_id"),
    ("Title", "title"),
    ("Risk level", "severity"),
    ("Result", lambda r: "ignored" if r["ignored"] else r["result"]),
    ("Reason", "reason"),
    ("Remediation", "remediation"),
    ("Handled by", "handled_by"),
    ("Remark", "remark"),
    ("Checked", "checked_at"),
]
WEAK_COLUMNS: list[Column] = [
    ("Server", "server_name"),
    ("Account", "username"),
    ("Account type", "account_type"),
    ("Reasons", "reasons"),
    ("First seen", "first_seen"),
    ("Last seen", "last_seen"),
]
_RESULT_FIELDS: tuple[str, ...] = (
    *("id", "server_id", "policy_id", "policy_name", "check_id", "title", "severity", "result"),
    *("reason", "remediation", "ignored", "handled_by", "remark", "checked_at"),
)
_WEAK_FIELDS = ("id", "server_id", "username", "account_type", "reasons", "first_seen", "last_seen")


def export(
    session: Session,
    *,
    view: str,
    fmt: str | None,
    now: datetime,
    region: str | None = None,
    server_id: str | None = None,
    result: str | None = None,
    severity: str | None = None,
    q: str | None = None,
) -> Response:
    """``view`` rows (filtered like the lists) as CSV or JSON, at most ``MAX_EXPORT``."""
    fmt = check_export(fmt, view, VIEWS)
    if view == "checks":
        rows = collect(
            lambda o, n: service.list_checks(
                session, region=region, server_id=server_id, severity=severity, q=q, offset=o, limit=n
            ),
            MAX_EXPORT,
        )
        return export_response(rows, CHECK_COLUMNS, fmt, "baseline-checks", now)
    if view == "weak_passwords":
        pairs = collect(
            lambda o, n: service.list_weak_passwords(
                session, server_id=server_id, region=region, offset=o, limit=n
            ),
            MAX_EXPORT,
        )
        rows = [row_fields(w, _WEAK_FIELDS, name) for w, name in pairs]
        return export_response(rows, WEAK_COLUMNS, fmt, "weak-passwords", now)
    triples = collect(
        lambda o, n: service.list_results(
            session, server_id=server_id, result=result, region=region, offset=o, limit=n
        ),
        MAX_EXPORT,
    )
    rows = [row_fields(r, _RESULT_FIELDS, name) for r, name, _verifying in triples]
    return export_response(rows, RESULT_COLUMNS, fmt, "baseline-results", now)
