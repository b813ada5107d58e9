"""``hostward logtest FILE [--service SERVICE|auto] [--json]``: run the login patterns over a log file.

Standalone (no manager, no agent), like ``fail2ban-regex``: operators check that their own logs are
recognised before relying on brute-force blocking. One line (or JSON object) per recognised line —
line number, kind (failure / success / other), service, user, address — then a summary. The file takes
the agent's own path: chunks of whole lines into the chunk parser (``LogParser.parse_numbered``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import typer

from hostward.cli.errors import CliError

EXIT_USAGE = 2
READ_BYTES = 8 << 20  # one read: as the agent's tailer reads at most per poll
MAX_LINE_BYTES = 1 << 20  # as the tailer: a longer line is handed out cut


def _open(file: Path) -> BinaryIO:
    if str(file) == "-":
        return sys.stdin.buffer
    try:
        return open(file, "rb")
    except FileNotFoundError as exc:
        raise CliError(f"{file}: no such file") from exc
    except IsADirectoryError as exc:
        raise CliError(f"{file}: is a directory") from exc
    except OSError as exc:
        raise CliError(f"{file}: cannot read: {exc.strerror or exc}") from exc


def _chunks(stream: BinaryIO) -> Iterator[str]:
    """The stream as decoded chunks of whole lines (the last one may lack its newline), the way the
    agent's log tailer hands them to the parser: lines end at newlines only, invalid UTF-8 is replaced,
    and a line longer than ``MAX_LINE_BYTES`` is cut there (the parser counts it as oversize)."""
    partial = b""
    discarding = False  # inside an over-long line that was already handed out cut
    while block := stream.read(READ_BYTES):
        data = partial + block if partial else block
        end = data.rfind(b"\n")
        start = 0
        if end >= 0:
            if discarding:
                start = data.find(b"\n") + 1
                discarding = False
            if start <= end:
                yield data[start : end + 1].decode("utf-8", "replace")
        partial = data[end + 1 :]
        if len(partial) > MAX_LINE_BYTES:
            if not discarding:
                yield partial[:MAX_LINE_BYTES].decode("utf-8", "replace") + "\n"
            partial, discarding = b"", True
    if partial and not discarding:
        yield partial.decode("utf-8", "replace")


def logtest(
    file: Path = typer.Argument(..., help="Log file to test ('-' reads standard input).", show_default=False),
    service: str = typer.Option(
        "auto",
        "--service",
        help="Service of lines without a syslog header: auto, sshd, vsftpd, proftpd, pure-ftpd, mysql, "
        "dropbear, pam.",
    ),
    json_output: bool = typer.Option(
        False, "--json", help="One JSON object per recognised line, then a summary."
    ),
) -> None:
    """Show which lines of a log file the login-security patterns recognise (no manager needed)."""
    from hostward.agent.detectors.logevents import as_event
    from hostward.agent.detectors.logparse import LogParser
    from hostward.agent.detectors.logpatterns import PatternError

    try:
        parser = LogParser(service=service)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=EXIT_USAGE) from exc
    except PatternError as exc:
        raise CliError(f"log patterns: {exc}") from exc
    kinds: Counter[str] = Counter()
    patterns: Counter[str] = Counter()
    failures_by_address: Counter[str] = Counter()
    out = sys.stdout
    stream = _open(file)
    base = 0  # lines before the current chunk
    try:
        for chunk in _chunks(stream):
            for number, row in parser.parse_numbered(chunk):
                event = as_event(row)
                kinds[event.kind] += 1
                patterns[event.pattern] += 1
                if event.kind == "failure" and event.address:
                    failures_by_address[event.address] += 1
                record = {
                    "line": base + number,
                    "kind": event.kind,
                    "service": event.service,
                    "user": event.user,
                    "address": event.address,
                    "method": event.method,
                    "port": event.port,
                    "timestamp": event.when.isoformat() if event.when else None,
                    "pattern": event.pattern,
                }
                out.write(json.dumps(record) + "\n" if json_output else _human(record) + "\n")
            base += chunk.count("\n")
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    counters = parser.counters
    summary: dict[str, Any] = {
        "file": str(file),
        "service": service,
        "lines": counters.lines,
        "recognised": counters.events,
        "failures": kinds["failure"],
        "successes": kinds["success"],
        "other": kinds["other"],
        "not_login_related": counters.skipped + counters.unmatched,
        "unparsed": counters.unparsed,
        "oversize": counters.oversize,
        "invalid_address": counters.invalid_address,
        "failure_sources": len(failures_by_address),
        "top_failure_sources": [
            {"address": a, "failures": n} for a, n in failures_by_address.most_common(10)
        ],
        "patterns": dict(patterns.most_common()),
    }
    if json_output:
        out.write(json.dumps({"summary": summary}) + "\n")
    else:
        out.write(_human_summary(summary))
    out.flush()


def _human(r: dict[str, Any]) -> str:
    user = r["user"] if r["user"] is not None else "-"
    return (
        f"{r['line']:>8}  {r['kind']:<7}  {r['service']:<9}  {user[:24]:<24}  {r['address'] or '-':<39}  "
        f"{r['pattern']}"
    )


def _human_summary(s: dict[str, Any]) -> str:
    lines = [
        "",
        f"{s['lines']:,} lines: {s['recognised']:,} recognised ({s['failures']:,} failures, "
        f"{s['successes']:,} successes, {s['other']:,} other), {s['not_login_related']:,} not login related, "
        f"{s['unparsed']:,} unparsed ({s['oversize']:,} too long); "
        f"{s['invalid_address']:,} without a valid address",
        f"failures came from {s['failure_sources']:,} addresses"
        + (
            ": " + ", ".join(f"{t['address']} ({t['failures']})" for t in s["top_failure_sources"])
            if s["top_failure_sources"]
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"
