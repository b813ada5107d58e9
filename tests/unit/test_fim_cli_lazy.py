"""The ``fim`` command group: its standalone half (agent code) loads only when used."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from hostward.cli.main import build_app

PROBE = """
import sys, typer
from hostward.cli.main import build_app
command = typer.main.get_command(build_app())
ctx = command.make_context("hostward", ["fim", "changes", "--help"], resilient_parsing=True)
command.get_command(ctx, "fim").get_command(ctx, "changes")
print(",".join(sorted(m for m in sys.modules if m.startswith("hostward.agent"))))
"""


def test_building_the_cli_and_manager_side_fim_commands_load_no_agent_code() -> None:
    # A fresh interpreter: this test process may have imported agent modules already.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_fim_group_lists_standalone_and_manager_commands() -> None:
    result = CliRunner().invoke(build_app(), ["fim", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("init", "check", "changes", "hosts", "accept"):
        assert name in result.output
    result = CliRunner().invoke(build_app(), ["fim", "init", "--help"])
    assert result.exit_code == 0 and "--db" in result.output
