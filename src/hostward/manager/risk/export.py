"""CSV / JSON exports of risk lists (vulnerabilities, baseline results, alarms) as file downloads.

Rows are plain dicts; columns name the key (or a function of the row) and the CSV header. Cells that a
spreadsheet would run as a formula (leading ``=``, ``+``, ``-``, ``@``, tab or CR) get a leading quote:
an exported finding's summary comes from an imported feed, and an alarm's from the monitored host.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from fastapi.responses import Response

from hostward.core.errors import Invalid

Column = tuple[str, str | Callable[[dict[str, Any]], Any]]
FORMATS = ("csv", "json")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def check_format(fmt: str | None) -> str:
    value = (fmt or "csv").lower()
    if value not in FORMATS:
        raise Invalid("format must be csv or json")
    return value


def check_export(fmt: str | None, view: str, views: Sequence[str]) -> str:
    """The export's format; refuses an unknown format or ``view``."""
    value = check_format(fmt)
    if view not in views:
        raise Invalid(f"view must be one of {', '.join(views)}")
    return value


def row_fields(row: Any, names: Iterable[str], server_name: str) -> dict[str, Any]:
    """An ORM row's ``names`` as a plain export row, with the name of its server."""
    out = {f: getattr(row, f) for f in names}
    out["server_name"] = server_name
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, sort_keys=True, default=str)
    text = str(value)
    if text.startswith(_FORMULA_START):
        # a negative number is data, not a formula
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def _value(row: dict[str, Any], key: str | Callable[[dict[str, Any]], Any]) -> Any:
    return key(row) if callable(key) else row.get(key)


def to_csv(rows: Iterable[dict[str, Any]], columns: Sequence[Column]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([header for header, _ in columns])
    for row in rows:
        writer.writerow([_cell(_value(row, key)) for _, key in columns])
    return out.getvalue()


def export_response(
    rows: list[dict[str, Any]], columns: Sequence[Column], fmt: str, name: str, now: datetime
) -> Response:
    """The rows as a download ``<name>-<UTC timestamp>.<csv|json>``."""
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    filename = f"{name}-{stamp}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "X-Hostward-Rows": str(len(rows))}
    if fmt == "json":
        body = json.dumps(rows, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
        return Response(body, media_type="application/json", headers=headers)
    # The BOM makes spreadsheet programs read the file as UTF-8.
    return Response("\ufeff" + to_csv(rows, columns), media_type="text/csv; charset=utf-8", headers=headers)


def collect(fetch: Callable[[int, int], tuple[list[Any], int]], limit: int, page: int = 500) -> list[Any]:
    """Up to ``limit`` rows from a paged list function ``fetch(offset, limit) -> (rows, total)``."""
    rows: list[Any] = []
    while len(rows) < limit:
        chunk, total = fetch(len(rows), min(page, limit - len(rows)))
        rows.extend(chunk)
        if not chunk or len(rows) >= total:
            break
    return rows
