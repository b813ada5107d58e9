"""``hostward wtp exec -- CMD [ARG...]``: run a privileged program with web tamper protection lifted.

The running agent (control socket ``<state_dir>/wtp.sock``, root only) checks that the program's
resolved executable is in the server's privileged list and lifts the lock; this process then runs the
program itself (same terminal, environment and working directory), tells the agent when it has ended,
and the agent refreshes the backup and locks again. The exit status is the program's (128+N when a
signal N ended it). When WTP is off on this server the program simply runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import typer

from hostward.cli.errors import CliError

DEFAULT_STATE_DIR = "/var/lib/hostward-agent"
STATE_ENV = "HOSTWARD_AGENT_STATE_DIR"
EXIT_NOT_PRIVILEGED = 126
EXIT_NOT_FOUND = 127


def _resolve(cmd: str) -> str:
    found = cmd if os.sep in cmd else shutil.which(cmd)
    if not found or not os.path.isfile(found):
        raise CliError(f"{cmd}: command not found", exit_code=EXIT_NOT_FOUND)
    return os.path.abspath(found)


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"cannot reach the agent at {path}: {exc.strerror or exc} (is `hostward agent run` running, "
            "and are you root?)"
        ) from exc
    return sock


def run_exec(argv: list[str], state_dir: Path) -> int:
    """The whole ``wtp exec``; returns the exit status to use."""
    from hostward.agent.wtpctl import SOCKET_NAME, LineChannel

    if not argv:
        raise CliError("no command given: hostward wtp exec -- CMD [ARG...]")
    exe = _resolve(argv[0])
    sock = _connect(state_dir / SOCKET_NAME)
    ch = LineChannel(sock)
    try:
        try:
            ch.send({"op": "begin", "exe": exe, "argv": argv})
        except BrokenPipeError:
            pass  # refused before the request was read (not root): the reason is waiting to be read
        answer = ch.recv()
        if answer is None:
            raise CliError("the agent closed the connection")
        if not answer.get("ok"):
            code = answer.get("code")
            raise CliError(
                str(answer.get("error") or "refused"),
                exit_code=EXIT_NOT_PRIVILEGED if code == "wtp_not_privileged" else 1,
            )
        # Ctrl-C reaches the child (same process group); this process waits for it and reports the end.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            try:
                status = subprocess.call([exe, *argv[1:]])
            except OSError as exc:
                sys.stderr.write(f"error: cannot run {exe}: {exc}\n")
                status = EXIT_NOT_PRIVILEGED
        finally:
            signal.signal(signal.SIGINT, previous)
        if status < 0:
            status = 128 - status
        ch.send({"op": "end", "status": status})
        done = ch.recv()
        if done is None or not done.get("ok"):
            reason = "the agent closed the connection" if done is None else done.get("error")
            sys.stderr.write(f"warning: protection may not be restored: {reason}\n")
        return status
    finally:
        sock.close()


EXEC_CONTEXT = {"allow_interspersed_args": False, "ignore_unknown_options": True}


def attach(group: typer.Typer) -> None:
    """Add ``exec`` to a ``wtp`` command group (the manager-side ``hostward wtp`` commands' group)."""
    group.command("exec", context_settings=EXEC_CONTEXT)(exec_command)


def exec_command(
    command: list[str] = typer.Argument(..., help="The privileged program and its arguments (after --)."),
    state_dir: Path = typer.Option(
        Path(os.environ.get(STATE_ENV) or DEFAULT_STATE_DIR),
        "--state-dir",
        help=f"The running agent's state directory (env {STATE_ENV}).",
    ),
) -> None:
    """Run CMD as a privileged process: protection lifted for it, backup refreshed and re-locked after."""
    code = run_exec(list(command), state_dir)
    if code:
        raise typer.Exit(code)
