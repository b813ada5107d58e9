"""``hostward fim init|check``: standalone file integrity checking, like AIDE (no manager needed).

``init --db FILE PATH...`` records a baseline; ``check --db FILE`` compares the file system with it and
prints added / removed / changed / moved entries with the changed attributes (old -> new). Exit status:
0 nothing changed, 1 something changed, 2 error.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import typer

from hostward.agent.errors import AgentError
from hostward.agent.fim.config import FimConfigError, WatchRoot, default_roots
from hostward.agent.fim.diff import Change, attr_value, change_dict, display_path
from hostward.agent.fim.engine import CheckResult, FimEngine
from hostward.agent.fim.pkgdb import system_index
from hostward.agent.fim.scan import Scanner, ScanStats
from hostward.agent.fim.store import BaselineStore
from hostward.cli.errors import CliError

EXIT_CHANGED = 1
EXIT_ERROR = 2

fim_app = typer.Typer(help="File integrity monitoring without a manager (like AIDE).", no_args_is_help=True)

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)


def parse_rate(text: str | None) -> int | None:
    """``50M`` / ``512k`` / ``1G`` / ``1048576`` bytes per second (binary multiples); None = unlimited."""
    if text is None or text.strip() in ("", "0"):
        return None
    m = _RATE.match(text)
    if m is None:
        raise CliError(f"--rate: {text!r} is not a byte rate (examples: 50M, 512k)", exit_code=EXIT_ERROR)
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _scanner(workers: int, rate: str | None) -> Scanner:
    if workers < 1:
        raise CliError("--workers must be at least 1", exit_code=EXIT_ERROR)
    # The CLI is a one-shot, single-threaded program: it can fork its workers (see Scanner).
    return Scanner(workers=workers, rate=parse_rate(rate), processes=True)


def _fail(exc: Exception) -> CliError:
    return CliError(str(exc), exit_code=EXIT_ERROR)


def _stats_line(stats: ScanStats) -> str:
    return (
        f"{stats.entries} entries in {stats.seconds:.2f} s; hashed {stats.files_hashed} files "
        f"({stats.bytes_hashed / 1e6:.1f} MB), reused {stats.reused}, unreadable {stats.errors}"
    )


@fim_app.command("init")
def fim_init(
    paths: list[Path] = typer.Argument(None, help="Files or directories to record (recursively)."),
    db: Path = typer.Option(..., "--db", help="Baseline file to write (replaced when it exists)."),
    ignore: list[str] = typer.Option([], "--ignore", help="Glob of paths or names to skip (repeatable)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes (walk and hash)."),
    rate: str | None = typer.Option(None, "--rate", help="Read at most this many bytes/s (e.g. 50M)."),
    defaults: bool = typer.Option(
        False,
        "--defaults",
        help="Also record the default important files (key binaries, accounts, sudo, cron).",
    ),
) -> None:
    """Record a baseline of PATH... in FILE."""
    paths = paths or []
    if not paths and not defaults:
        raise CliError("give at least one PATH (or --defaults)", exit_code=EXIT_ERROR)
    try:
        roots = default_roots() if defaults else []
        roots += [WatchRoot(os.fsencode(os.path.abspath(p)), True, False, tuple(ignore)) for p in paths]
        engine, stats = FimEngine.init(db, roots, scanner=_scanner(workers, rate), packages=None)
        engine.close()
    except (AgentError, OSError) as exc:
        raise _fail(exc) from exc
    sys.stdout.write(f"baseline written to {db}: {_stats_line(stats)}\n")


@fim_app.command("check")
def fim_check(
    db: Path = typer.Option(..., "--db", help="Baseline file written by init."),
    full: bool = typer.Option(
        False, "--full", help="Rehash every file, even when its metadata is unchanged."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    update: bool = typer.Option(False, "--update", help="Accept what is found as the new baseline."),
    packages: bool = typer.Option(
        True,
        "--packages/--no-packages",
        help="Label changes that match the package database as package updates.",
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes (walk and hash)."),
    rate: str | None = typer.Option(None, "--rate", help="Read at most this many bytes/s (e.g. 50M)."),
) -> None:
    """Compare the file system with the baseline in FILE (exit 0: unchanged, 1: changed, 2: error)."""
    try:
        store = BaselineStore.open(db, create=False)
        # The dpkg index read for labelling is kept next to the baseline (FILE.pkgindex) and reused while
        # the package database is unchanged.
        index = system_index(cache_file=Path(f"{db}.pkgindex")) if packages else None
        engine = FimEngine(store, scanner=_scanner(workers, rate), packages=index)
        try:
            result = engine.check(full=full, update=update)
        finally:
            engine.close()
    except FimConfigError as exc:
        raise _fail(exc) from exc
    except (AgentError, OSError) as exc:
        raise _fail(exc) from exc
    if as_json:
        # Compact: the C encoder (indent falls back to the pure-Python one, ~10x slower on big reports).
        sys.stdout.write(json.dumps(report_json(result), separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(report_text(result))
    if result.changed:
        raise typer.Exit(EXIT_CHANGED)


def _group(result: CheckResult) -> dict[str, list[Change]]:
    groups: dict[str, list[Change]] = {"added": [], "removed": [], "changed": [], "moved": []}
    for change in result.changes:
        groups[change.action].append(change)
    return groups


def report_json(result: CheckResult) -> dict[str, Any]:
    groups = _group(result)
    stats = result.stats
    return {
        "summary": {k: len(v) for k, v in groups.items()}
        | {"package_updates": sum(1 for c in result.changes if c.label == "package_update")},
        "stats": {
            "entries": stats.entries,
            "files_hashed": stats.files_hashed,
            "bytes_hashed": stats.bytes_hashed,
            "reused": stats.reused,
            "unreadable": stats.errors,
            "seconds": round(stats.seconds, 3),
        },
        **{k: [change_dict(c) for c in v] for k, v in groups.items()},
    }


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        if set(value) == {"id", "name"}:
            return f"{value['id']}({value['name']})" if value["name"] else str(value["id"])
        return "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}" if value else "{}"
    return "-" if value is None else str(value)


def report_text(result: CheckResult) -> str:
    groups = _group(result)
    lines = [
        f"added: {len(groups['added'])}, removed: {len(groups['removed'])}, "
        f"changed: {len(groups['changed'])}, moved: {len(groups['moved'])} "
        f"({_stats_line(result.stats)})"
    ]
    for action in ("added", "removed", "moved", "changed"):
        for change in groups[action]:
            label = (
                f"  [package update: {change.package.package}]"
                if change.label == "package_update" and change.package
                else ""
            )
            head = f"{action:8} {display_path(change.path)}"
            if change.moved_from is not None:
                head += f"  (from {display_path(change.moved_from)})"
            lines.append(head + label)
            if change.old is not None and change.new is not None:
                for attr in change.attrs:
                    old, new = attr_value(change.old, attr), attr_value(change.new, attr)
                    lines.append(f"    {attr:7} {_fmt(old)} -> {_fmt(new)}")
    return "\n".join(lines) + "\n"
