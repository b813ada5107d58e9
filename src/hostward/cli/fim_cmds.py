"""``hostward fim init|check``: standalone file integrity checking, like AIDE (no manager needed).

``init --db FILE PATH...`` records a baseline; ``check --db FILE`` compares the file system with it and
prints added / removed / changed / moved entries with the changed attributes (old -> new). Exit status:
0 nothing changed, 1 something changed, 2 error.

This module declares the commands for typer (help, usage errors); the work is in ``fim_standalone``,
which the console script also calls directly for a plain command line (without loading typer).
"""

from __future__ import annotations

from pathlib import Path

import typer

from hostward.cli.fim_standalone import (
    EXIT_CHANGED,
    EXIT_ERROR,
    parse_rate,
    report_json,
    report_text,
    run_check,
    run_init,
)

__all__ = ["EXIT_CHANGED", "EXIT_ERROR", "fim_app", "parse_rate", "report_json", "report_text"]

fim_app = typer.Typer(help="File integrity monitoring without a manager (like AIDE).", no_args_is_help=True)


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
    run_init(db, paths or [], ignore=ignore, workers=workers, rate=rate, defaults=defaults)


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
    code = run_check(
        db, full=full, as_json=as_json, update=update, packages=packages, workers=workers, rate=rate
    )
    if code:
        raise typer.Exit(code)
