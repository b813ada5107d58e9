"""``hostward fim init|check`` without the command framework: the work of both commands, and a fast path.

``fim_cmds`` declares the two commands for typer (help, usage errors); what they do lives here, so the
console script can run a plain ``fim init|check`` line without importing typer, pydantic and the other
command modules first (``fast_command``). Building the whole command tree costs about half a second, which
is most of a quick check. Anything the small parser here does not recognise (``--help``, an unknown or
malformed option, ``--``) returns None and the full command line runs instead, so usage errors and help
look exactly as before.

Nothing heavy is imported at module level: the FIM engine loads when a command runs.
"""

from __future__ import annotations

import gc
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostward.cli.errors import CliError

if TYPE_CHECKING:
    from hostward.agent.fim.diff import Change
    from hostward.agent.fim.engine import CheckResult
    from hostward.agent.fim.scan import Scanner, ScanStats

EXIT_CHANGED = 1
EXIT_ERROR = 2

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
    from hostward.agent.fim.scan import Scanner

    if workers < 1:
        raise CliError("--workers must be at least 1", exit_code=EXIT_ERROR)
    # The CLI is a one-shot, single-threaded program: it can fork its workers (see Scanner).
    return Scanner(workers=workers, rate=parse_rate(rate), processes=True)


def _stats_line(stats: ScanStats) -> str:
    return (
        f"{stats.entries} entries in {stats.seconds:.2f} s; hashed {stats.files_hashed} files "
        f"({stats.bytes_hashed / 1e6:.1f} MB), reused {stats.reused}, unreadable {stats.errors}"
    )


def run_init(
    db: Path, paths: Sequence[Path], *, ignore: Sequence[str], workers: int, rate: str | None, defaults: bool
) -> None:
    """Record a baseline of ``paths`` (and the default important files) in ``db``."""
    from hostward.agent.errors import AgentError
    from hostward.agent.fim.config import WatchRoot, default_roots
    from hostward.agent.fim.engine import FimEngine

    if not paths and not defaults:
        raise CliError("give at least one PATH (or --defaults)", exit_code=EXIT_ERROR)
    try:
        roots = default_roots() if defaults else []
        roots += [WatchRoot(os.fsencode(os.path.abspath(p)), True, False, tuple(ignore)) for p in paths]
        engine, stats = FimEngine.init(db, roots, scanner=_scanner(workers, rate), packages=None)
        engine.close()
    except (AgentError, OSError) as exc:
        raise CliError(str(exc), exit_code=EXIT_ERROR) from exc
    sys.stdout.write(f"baseline written to {db}: {_stats_line(stats)}\n")


def run_check(
    db: Path, *, full: bool, as_json: bool, update: bool, packages: bool, workers: int, rate: str | None
) -> int:
    """Compare the file system with the baseline in ``db``; prints the report, returns the exit status."""
    import json

    from hostward.agent.errors import AgentError
    from hostward.agent.fim.engine import FimEngine
    from hostward.agent.fim.pkgdb import system_index
    from hostward.agent.fim.store import BaselineStore

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
    except (AgentError, OSError) as exc:  # FimConfigError is an AgentError
        raise CliError(str(exc), exit_code=EXIT_ERROR) from exc
    if as_json:
        # Compact: the C encoder (indent falls back to the pure-Python one, ~10x slower on big reports).
        sys.stdout.write(json.dumps(report_json(result), separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(report_text(result))
    return EXIT_CHANGED if result.changed else 0


def _group(result: CheckResult) -> dict[str, list[Change]]:
    groups: dict[str, list[Change]] = {"added": [], "removed": [], "changed": [], "moved": []}
    for change in result.changes:
        groups[change.action].append(change)
    return groups


def report_json(result: CheckResult) -> dict[str, Any]:
    """The ``--json`` report: summary counts, scan statistics and the changes by action."""
    from hostward.agent.fim.diff import change_dict

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
    """The plain report: one summary line, then one line per change and one per changed attribute."""
    from hostward.agent.fim.diff import attr_value, display_path

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


# ---- the fast path --------------------------------------------------------------------------------

# Options of each command: name -> "value" (takes one), "many" (repeatable) or the flag's value.
_OPTIONS: dict[str, dict[str, object]] = {
    "init": {
        "--db": "value",
        "--ignore": "many",
        "--workers": "value",
        "--rate": "value",
        "--defaults": True,
    },
    "check": {
        "--db": "value",
        "--full": True,
        "--json": True,
        "--update": True,
        "--packages": True,
        "--no-packages": False,
        "--workers": "value",
        "--rate": "value",
    },
}
_DEST = {"--no-packages": "--packages"}
_FLAG_DEFAULTS = {
    "--defaults": False,
    "--full": False,
    "--json": False,
    "--update": False,
    "--packages": True,
}


def parse_fast(argv: Sequence[str]) -> tuple[str, dict[str, Any], list[str]] | None:
    """(command, options, arguments) of a plain ``init|check`` line; None for anything else.

    Accepts what the typer command accepts in the common forms (``--opt VALUE``, ``--opt=VALUE``,
    options before or after the paths, the last of a repeated single-value option wins) and declines
    everything unusual, which then goes through typer unchanged."""
    if not argv or argv[0] not in _OPTIONS:
        return None
    command = argv[0]
    spec = _OPTIONS[command]
    options: dict[str, Any] = {}
    args: list[str] = []
    i = 1
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("-") or token == "-":
            args.append(token)
            continue
        name, eq, inline = token.partition("=")
        kind = spec.get(name)
        if kind is None:
            return None  # --help, --, a short or unknown option: typer decides
        if kind in ("value", "many"):
            if eq:
                value = inline
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                return None  # missing value: typer's usage error
            if not value or value.startswith("-"):
                return None  # typer decides what an empty or dash-led value means
            if kind == "many":
                options.setdefault(name, []).append(value)
            else:
                options[name] = value
        elif eq:
            return None  # a flag given a value
        else:
            options[_DEST.get(name, name)] = kind
    if "--db" not in options or (command == "check" and args):
        return None  # typer reports the missing option or the extra argument
    workers = options.get("--workers", "2")
    if not re.fullmatch(r"[0-9]+", workers):
        return None  # typer reports the bad integer
    options["--workers"] = int(workers)
    for flag, default in _FLAG_DEFAULTS.items():
        if flag in spec:
            options.setdefault(flag, default)
    return command, options, args


def fast_command(argv: Sequence[str]) -> Callable[[], int] | None:
    """For ``fim init|check ...`` (``argv`` after ``fim``): a function that runs it and returns the exit
    status, or None when the line needs the full command line parser. Errors raise ``CliError`` as the
    typer commands do."""
    parsed = parse_fast(argv)
    if parsed is None:
        return None
    command, opts, args = parsed

    def run() -> int:
        # The report of a big check is made of many small dicts and lists and no reference cycles:
        # collections would only walk them again and again.
        collecting = gc.isenabled()
        gc.disable()
        try:
            if command == "init":
                run_init(
                    Path(opts["--db"]),
                    [Path(a) for a in args],
                    ignore=opts.get("--ignore", []),
                    workers=opts["--workers"],
                    rate=opts.get("--rate"),
                    defaults=opts["--defaults"],
                )
                return 0
            return run_check(
                Path(opts["--db"]),
                full=opts["--full"],
                as_json=opts["--json"],
                update=opts["--update"],
                packages=opts["--packages"],
                workers=opts["--workers"],
                rate=opts.get("--rate"),
            )
        except KeyboardInterrupt:
            sys.stderr.write("Aborted!\n")  # what the command framework prints
            return 1
        finally:
            if collecting:
                gc.enable()

    return run
