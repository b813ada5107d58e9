"""How the CLI prints: JSON for scripts (``--json``), rich tables and key/value panels for people."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

AGENT_STATUS = {"online": "Online", "offline": "Offline", "not_installed": "Not installed"}
PROTECTION_STATUS = {
    "opened": "Protected",
    "closed": "Unprotected",
    "protection_exception": "Protection interrupted",
}


PIPE_WIDTH = 200


def console() -> Console:
    # Built per call so that tests capturing stdout (and pipes) see the output. Into a pipe, a wide
    # width keeps ids on one line (rich would fold them at 80 columns); COLUMNS still wins.
    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(file=sys.stdout, soft_wrap=False, highlight=False, width=width)


def print_json(data: Any) -> None:
    """Machine output: indented JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def say(message: str) -> None:
    """One line of human output on stdout (no markup interpretation)."""
    sys.stdout.write(message + "\n")


def warn(message: str) -> None:
    sys.stderr.write(message + "\n")


def text(value: Any) -> str:
    """A cell value for people: ``-`` for nothing, lists joined, datetimes shortened."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and len(value) >= 19 and value[4:5] == "-" and value[10:11] == "T":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return value
    return str(value)


Column = tuple[str, str | Callable[[dict[str, Any]], Any]]


def print_table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], *, title: str | None = None
) -> None:
    """A rich table; each column is (header, key or function of the row)."""
    table = Table(title=title, show_lines=False, header_style="bold")
    for header, _ in columns:
        # Ids are copied into the next command: never fold them.
        table.add_column(header, overflow="fold", no_wrap=header == "ID")
    count = 0
    for row in rows:
        cells = []
        for _, getter in columns:
            value = getter(row) if callable(getter) else row.get(getter)
            # Text, not str: a server or alarm name must never be read as rich markup.
            cells.append(Text(text(value)))
        table.add_row(*cells)
        count += 1
    out = console()
    if count == 0:
        out.print(f"({title.lower() if title else 'nothing'}: none)", markup=False)
        return
    out.print(table)


def print_record(record: dict[str, Any], *, title: str | None = None, skip: Sequence[str] = ()) -> None:
    """One object as a two-column key/value table."""
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in record.items():
        if key in skip:
            continue
        table.add_row(Text(key), Text(text(value)))
    console().print(table)
