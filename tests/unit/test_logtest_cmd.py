"""``hostward logtest``: JSON per recognised line and a summary; errors exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostward.cli import logtest_cmds
from hostward.cli.logtest_cmds import logtest

LOG = (
    "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 22 ssh2\n"
    "Nov 24 13:57:45 web01 CRON[2]: (root) CMD (true)\n"
    "Nov 24 13:57:46 web01 sshd-session[3]: Accepted publickey for alice from ::ffff:198.51.100.2 port 5\n"
    "\x00\x01 garbage\n"
    "Invalid user admin from 2001:db8::1 port 7\r\n"
)


def app() -> typer.Typer:
    a = typer.Typer()
    a.command("logtest")(logtest)

    @a.callback()
    def root() -> None:
        pass

    return a


def test_json_output(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text(LOG, encoding="utf-8")
    result = CliRunner().invoke(app(), ["logtest", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    events, summary = rows[:-1], rows[-1]["summary"]
    assert [(e["line"], e["kind"], e["service"], e["user"], e["address"]) for e in events] == [
        (1, "failure", "sshd", "root", "203.0.113.7"),
        (3, "success", "sshd", "alice", "198.51.100.2"),
        (5, "failure", "sshd", "admin", "2001:db8::1"),
    ]
    assert (summary["lines"], summary["recognised"], summary["failures"], summary["unparsed"]) == (5, 3, 2, 1)


def test_human_output_and_service_hint(tmp_path: Path) -> None:
    path = tmp_path / "sshd.log"
    path.write_text("Failed password for root from 203.0.113.7 port 22 ssh2\n", encoding="utf-8")
    result = CliRunner().invoke(app(), ["logtest", str(path), "--service", "sshd"])
    assert result.exit_code == 0
    assert "203.0.113.7" in result.output and "1 recognised" in result.output


def test_errors_exit_non_zero(tmp_path: Path) -> None:
    assert CliRunner().invoke(app(), ["logtest", str(tmp_path / "missing.log")]).exit_code != 0
    path = tmp_path / "x.log"
    path.write_text("")
    assert CliRunner().invoke(app(), ["logtest", str(path), "--service", "telnet"]).exit_code != 0


def test_read_boundaries_and_an_over_long_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # small reads so that the file spans many chunks; one line is over the tailer's 1 MiB cut
    monkeypatch.setattr(logtest_cmds, "READ_BYTES", 4096)
    ok = "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.{n} port 22 ssh2\n"
    lines = [ok.format(n=n % 250) if n % 3 else "Nov 24 13:57:44 web01 CRON[2]: x\n" for n in range(400)]
    lines[200] = "Nov 24 13:57:44 web01 sshd[1]: " + "\xe9" * (1 << 20) + "\n"  # 2 bytes a character
    path = tmp_path / "auth.log"
    path.write_bytes("".join(lines).encode() + b"Invalid user a from 2001:db8::1 port 7")  # no final newline
    result = CliRunner().invoke(app(), ["logtest", str(path), "--json", "--service", "sshd"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    events, summary = rows[:-1], rows[-1]["summary"]
    want = [n + 1 for n in range(400) if n % 3 and n != 200] + [401]
    assert [e["line"] for e in events] == want
    assert events[0]["address"] == "203.0.113.1" and events[-1]["address"] == "2001:db8::1"
    assert (summary["lines"], summary["oversize"], summary["recognised"]) == (401, 1, len(want))


def test_standard_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app(), ["logtest", "-", "--json"], input=LOG.encode())
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1])["summary"]["recognised"] == 3
