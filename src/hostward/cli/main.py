"""``hostward`` entry point: builds the command tree and turns every failure into one line on stderr.

Commands live in modules by concern (manager, agent, auth, servers/protection, quotas, scans, alarms,
policies, up); this module only assembles them. ``--debug`` (anywhere on the line, or
``HOSTWARD_DEBUG=1``) shows the traceback instead of the one-line message.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hostward import __version__
from hostward.cli.errors import CliError
from hostward.core.errors import ConfigError, HostwardError

if TYPE_CHECKING:
    import typer

EXIT_CONFIG = 2


@dataclass
class State:
    """Options of the root command, shared with subcommands through ``ctx.obj``."""

    debug: bool = False


def _version(value: bool) -> None:
    import typer

    if value:
        sys.stdout.write(f"hostward {__version__}\n")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """The full command tree (built on demand: importing this module registers nothing)."""
    import typer

    from hostward.cli import (
        agent_cmds,
        alarms_cmds,
        auth_cmds,
        fimrec_cmds,
        loginsec_cmds,
        manager_cmds,
        policies_cmds,
        quotas_cmds,
        scans_cmds,
        servers_cmds,
        up_cmd,
    )

    app = typer.Typer(
        name="hostward",
        help="hostward: host security manager and agent.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        """hostward: host security manager and agent."""
        state = ctx.ensure_object(State)
        state.debug = state.debug or debug

    # typer is imported here, not with this module (see ``run``): resolve the annotation it reads now.
    root.__annotations__["ctx"] = typer.Context
    app.add_typer(manager_cmds.app, name="manager")
    app.command("up")(up_cmd.up)
    app.command("login")(auth_cmds.login)
    app.command("logout")(auth_cmds.logout)
    app.add_typer(auth_cmds.token_app, name="token")
    app.add_typer(agent_cmds.app, name="agent")
    app.add_typer(servers_cmds.servers_app, name="servers")
    app.add_typer(quotas_cmds.app, name="quotas")
    app.add_typer(servers_cmds.protection_app, name="protection")
    app.add_typer(scans_cmds.app, name="scans")
    app.add_typer(alarms_cmds.alarms_app, name="alarms")
    app.add_typer(policies_cmds.app, name="policies")
    app.add_typer(alarms_cmds.whitelists_app, name="whitelists")
    # `fim init|check` (standalone, agent code) load on first use: see fimrec_cmds.FimGroup.
    app.add_typer(fimrec_cmds.app, name="fim")
    loginsec_cmds.attach(alarms_cmds.whitelists_app)
    app.add_typer(loginsec_cmds.blocked_ips_app, name="blocked-ips")
    _add_risk_commands(app)
    _add_wtp_exec(app)
    return app


def _add_wtp_exec(app: typer.Typer) -> None:
    """``hostward wtp ...`` (manager side) with ``wtp exec -- CMD`` (agent side), and ``ransomware ...``."""
    from hostward.cli import ransomware_cmds, wtp_cmds, wtp_exec_cmd

    wtp_exec_cmd.attach(wtp_cmds.app)
    app.add_typer(wtp_cmds.app, name="wtp")
    app.add_typer(ransomware_cmds.app, name="ransomware")


def _add_risk_commands(app: typer.Typer) -> None:
    """Standalone checks (no manager needed): log test, baseline, vulnerabilities, weak passwords."""
    import typer

    from hostward.cli import logtest_cmds, malware_cmds, risk_cmds

    app.command("logtest")(logtest_cmds.logtest)
    malware = typer.Typer(
        help="Malware scanning with the bundled YARA rules (standalone).", no_args_is_help=True
    )
    malware.command("scan")(malware_cmds.malware_scan)
    from hostward.cli import isolated_cmds

    isolated_cmds.attach(malware)
    app.add_typer(isolated_cmds.isolated_files_app, name="isolated-files")
    app.add_typer(malware, name="malware")

    baseline = typer.Typer(
        help="Baseline checks (standalone run; results on the manager).", no_args_is_help=True
    )
    baseline.command("run")(risk_cmds.baseline_run)
    vulns = typer.Typer(
        help="Vulnerabilities (standalone scan; feeds and findings on the manager).", no_args_is_help=True
    )
    vulns.command("scan")(risk_cmds.vulns_scan)
    weakpass = typer.Typer(help="Weak-password check of local accounts (standalone).", no_args_is_help=True)
    weakpass.command("check")(risk_cmds.weakpass_check)
    from hostward.cli import risk_mgr_cmds

    risk_mgr_cmds.attach(vulns, baseline)
    app.add_typer(baseline, name="baseline")
    app.add_typer(vulns, name="vulns")
    app.add_typer(weakpass, name="weakpass")


def _one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


def _fail(state: State, message: str, exit_code: int) -> None:
    if state.debug:
        traceback.print_exc()
    sys.stderr.write(f"error: {_one_line(message)}\n")
    sys.stderr.flush()
    raise SystemExit(exit_code)


def run(argv: Sequence[str] | None = None) -> None:
    """Run one command line; exits the process (``SystemExit``) with the command's status."""
    args = list(sys.argv[1:] if argv is None else argv)
    state = State(debug=os.environ.get("HOSTWARD_DEBUG", "") not in ("", "0"))
    # --debug is accepted anywhere on the line, not only before the subcommand, because that is where
    # people add it when a command has just failed.
    if "--debug" in args:
        state.debug = True
        args = [a for a in args if a != "--debug"]
    # A plain `fim init|check` line runs without building the command tree (typer, pydantic and every
    # command module cost about half a second, most of a quick check); anything else, or anything the
    # small parser declines (help, usage errors), goes through typer.
    fast = _fim_fast(args)
    if fast is None:
        import typer

        command = typer.main.get_command(build_app())
    try:
        if fast is not None:
            raise SystemExit(fast())
        command.main(args=args, prog_name="hostward", obj=state)
    except CliError as exc:
        _fail(state, exc.message, exc.exit_code)
    except ConfigError as exc:
        _fail(state, exc.message, EXIT_CONFIG)
    except HostwardError as exc:
        _fail(state, exc.message, 1)
    except Exception as exc:
        _fail(state, f"{type(exc).__name__}: {exc} (run with --debug for the traceback)", 1)


def _fim_fast(args: list[str]) -> Callable[[], int] | None:
    if args[:1] != ["fim"] or args[1:2] not in (["init"], ["check"]):
        return None
    from hostward.cli.fim_standalone import fast_command

    return fast_command(args[1:])


def main() -> None:
    """Console-script entry point (``hostward``)."""
    run()
