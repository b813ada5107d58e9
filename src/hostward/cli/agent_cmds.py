"""``hostward agent enroll|run|status``: thin wrappers over ``hostward.agent.cli``.

The agent package is imported inside each command so that manager and API commands never load it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hostward.cli.errors import CliError

app = typer.Typer(help="Run the agent on this machine.", no_args_is_help=True)

STATE_DIR_HELP = "Agent state directory (identity, outbox, baselines); one per agent."


def _finish(code: int | None) -> None:
    if code:
        raise typer.Exit(code)


def _debug(ctx: typer.Context) -> bool:
    return bool(getattr(ctx.obj, "debug", False))


@app.command("enroll")
def enroll(
    ctx: typer.Context,
    manager: str = typer.Option(..., "--manager", help="Agent channel URL, e.g. https://manager:10180."),
    token: str = typer.Option(..., "--token", help="Enrollment token (`hostward token create`)."),
    ca_fingerprint: str = typer.Option(
        ..., "--ca-fingerprint", help="SHA-256 fingerprint of the manager CA."
    ),
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    name: str | None = typer.Option(
        None, "--name", help="Agent name; several agents on one machine need distinct names."
    ),
) -> None:
    """Enroll this machine with the manager and store the agent's own credential."""
    from hostward.agent.cli import enroll_cmd

    _finish(
        enroll_cmd(
            manager=manager,
            token=token,
            ca_fingerprint=ca_fingerprint,
            state_dir=state_dir,
            name=name,
            debug=_debug(ctx),
        )
    )


def _check_log_source(value: str) -> str:
    service, sep, path = value.partition(":")
    if not sep or not service or not path:
        raise CliError(f"--log-source must be SERVICE:PATH, got {value!r}", exit_code=2)
    return value


@app.command("run")
def run(
    ctx: typer.Context,
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    log_source: list[str] | None = typer.Option(
        None,
        "--log-source",
        help="Extra log to watch, SERVICE:PATH (repeatable), e.g. sshd:/var/log/auth.log.",
    ),
) -> None:
    """Run the enrolled agent in the foreground until SIGINT/SIGTERM."""
    sources = [_check_log_source(v) for v in (log_source or [])]
    from hostward.agent.cli import run_cmd

    _finish(run_cmd(state_dir=state_dir, log_sources=sources, debug=_debug(ctx)))


@app.command("status")
def status(
    ctx: typer.Context,
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show the agent's identity, manager, outbox backlog and detector health."""
    from hostward.agent.cli import status_cmd

    _finish(status_cmd(state_dir=state_dir, as_json=as_json, debug=_debug(ctx)))


@app.command("uninstall")
def uninstall(
    ctx: typer.Context,
    state_dir: Path = typer.Option(..., "--state-dir", help=STATE_DIR_HELP),
    keep_state: bool = typer.Option(False, "--keep-state", help="Remove the firewall rules only."),
) -> None:
    """Remove the agent's firewall rules (lifting every block) and its state directory; stop it first."""
    from hostward.agent.uninstall import uninstall as run_uninstall

    report = run_uninstall(state_dir, keep_state=keep_state)
    for error in report.errors:
        typer.echo(f"warning: {error}", err=True)
    removed = f"; removed {state_dir}" if report.state_removed else ""
    typer.echo(f"firewall rules removed ({', '.join(report.firewall) or 'none found'}){removed}")
    if report.errors:
        raise typer.Exit(1)
