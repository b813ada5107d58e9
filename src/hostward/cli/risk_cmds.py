"""Standalone risk checks (no manager needed): ``hostward baseline run``, ``hostward vulns scan``,
``hostward weakpass check``.

Exit status, the same for all three: 0 nothing found (every check passed or was not applicable, no
vulnerability, no weak password); 1 something found (a failed check, a finding, a weak password); 2 the
run is incomplete or could not happen (a policy file could not be loaded - the other policies still
ran and are printed -, no feed could be loaded, the shadow file is unreadable). Problems with single
feed entries are warnings on stderr and do not change the status.

The agent modules are imported inside the commands so ``hostward --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hostward.cli.errors import CliError
from hostward.cli.output import console, print_json, say, warn

EXIT_FOUND = 1
EXIT_INCOMPLETE = 2

_RESULT_STYLE = {"passed": "green", "failed": "red", "not_applicable": "yellow"}
_SEVERITY_STYLE = {
    "critical": "bold red",
    "high": "red",
    "medium": "yellow",
    "low": "cyan",
    "unknown": "white",
}


def baseline_run(
    policies: list[Path] = typer.Option(
        [],
        "--policy",
        help="Policy file or directory (ours or Wazuh SCA); repeatable. Default: shipped policies.",
    ),
    root: Path = typer.Option(
        Path("/"), "--root", help="Check the file tree below this directory instead of /."
    ),
    command_timeout: float = typer.Option(
        10.0, "--command-timeout", help="Seconds before a check's command is killed."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Run baseline checks and print each check's id, result and reason."""
    from hostward.agent.baseline import run_baseline

    for p in policies:
        if not p.exists():
            raise CliError(f"--policy {p}: no such file or directory", exit_code=EXIT_INCOMPLETE)
    report = run_baseline(policies or None, root=root, command_timeout=command_timeout)
    if json_output:
        print_json(report.to_dict())
    else:
        out = console()
        for run in report.runs:
            c = run.counts()
            out.print(
                f"[bold]{escape(run.name)}[/bold] ({escape(run.policy_id)}, {escape(run.file)}): "
                f"{c['passed']} passed, {c['failed']} failed, {c['not_applicable']} not applicable",
                emoji=False,
            )
            for r in run.results:
                style = _RESULT_STYLE[r.result]
                out.print(
                    f"  [{style}]{r.result:<14}[/{style}] {escape(r.check_id):<28} {escape(r.title)}",
                    emoji=False,
                )
                out.print(f"  {'':<14} {'':<28} [dim]{escape(r.reason)}[/dim]", highlight=False, emoji=False)
        counts = report.counts()
        rate = report.pass_rate()
        say(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['not_applicable']} not applicable"
            + (f"; pass rate {rate}%" if rate is not None else "")
            + f" ({report.seconds:.2f} s)"
        )
    for err in report.errors:
        warn(f"policy error: {err}")
    if report.errors:
        raise typer.Exit(EXIT_INCOMPLETE)
    if report.counts()["failed"]:
        raise typer.Exit(EXIT_FOUND)


def vulns_scan(
    feeds: list[Path] = typer.Option(
        ..., "--feed", help="OSV JSON file/directory/zip or Debian tracker JSON; repeatable."
    ),
    root: Path = typer.Option(
        Path("/"), "--root", help="Inventory the file tree below this directory instead of /."
    ),
    no_languages: bool = typer.Option(
        False, "--os-only", help="Only dpkg/rpm packages (skip Python, npm, Java)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Match this machine's installed packages against vulnerability feeds."""
    from hostward.agent.vulns import scan_host

    for p in feeds:
        if not p.exists():
            raise CliError(f"--feed {p}: no such file or directory", exit_code=EXIT_INCOMPLETE)
    scan = scan_host(feeds, root, languages=not no_languages)
    if scan.advisories == 0:
        for issue in scan.issues:
            warn(f"feed problem: {issue}")
        raise CliError("no advisory could be loaded from the given feeds", exit_code=EXIT_INCOMPLETE)
    for issue in scan.issues:
        warn(f"feed problem (entry skipped): {issue}")
    findings = scan.result.findings
    if json_output:
        print_json(scan.to_dict())
    else:
        out = console()
        for f in findings:
            style = _SEVERITY_STYLE[f.severity.band]
            score = f" {f.severity.score:.1f}" if f.severity.score is not None else ""
            out.print(
                f"[{style}]{f.severity.band:<8}{score:>5}[/{style}] {escape(f.package)} "
                f"{escape(f.installed_version)} -> {escape(f.fixed_version or 'no fix yet')}  "
                f"{escape(', '.join(f.ids[:4]))}",
                highlight=False,
                emoji=False,
            )
            if f.fix_command:
                out.print(f"    fix: {f.fix_command}", markup=False, highlight=False, emoji=False)
            elif f.remediation:
                out.print(f"    {f.remediation}", markup=False, highlight=False, emoji=False)
        d = scan.distro
        say(
            f"{len(findings)} vulnerable package(s) among {scan.packages} installed"
            + (f" ({d.family} {d.version_id})" if d else "")
            + f"; {scan.advisories} advisories; "
            + f"{scan.result.suppressed_backports} fixed by distribution backports"
        )
    if findings:
        raise typer.Exit(EXIT_FOUND)


def weakpass_check(
    wordlist: Path | None = typer.Option(
        None, "--wordlist", help="Your own weak passwords (one per line, at most 300)."
    ),
    shadow: Path = typer.Option(Path("/etc/shadow"), "--shadow", help="Shadow file to check."),
    rate: float = typer.Option(0.0, "--rate", help="At most this many hashes per second (0 = unthrottled)."),
    workers: int = typer.Option(1, "--workers", help="Hashing threads."),
    max_seconds: float | None = typer.Option(
        None, "--max-seconds", help="Stop after this long (reported as incomplete)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check local password hashes against common, custom and username-derived passwords."""
    from hostward.agent.weakpass import WeakpassConfig, WordlistError, check_shadow, custom_wordlist

    try:
        custom = custom_wordlist(path=wordlist) if wordlist is not None else ()
    except WordlistError as exc:
        raise CliError(str(exc), exit_code=EXIT_INCOMPLETE) from exc
    if workers < 1:
        raise CliError("--workers must be at least 1", exit_code=EXIT_INCOMPLETE)
    config = WeakpassConfig(
        max_hashes_per_second=rate or None, workers=workers, custom=custom, max_seconds=max_seconds
    )
    report = check_shadow(shadow, config)
    if json_output:
        print_json(report.to_dict())
    else:
        for w in report.weak:
            say(f"weak  {w.username:<20} {w.account_type:<7} {', '.join(w.reasons)}")
        say(
            f"{report.status}: {report.detail}"
            + (f" ({report.hashes} hashes in {report.seconds:.1f} s)" if report.hashes else "")
        )
    if report.status != "ok":
        if not json_output:
            warn(f"error: {report.detail}")
        raise typer.Exit(EXIT_INCOMPLETE)
    if report.weak:
        raise typer.Exit(EXIT_FOUND)
    if not report.complete:
        raise typer.Exit(EXIT_INCOMPLETE)
