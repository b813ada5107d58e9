"""The standalone risk commands (``baseline run``, ``vulns scan``, ``weakpass check``): output and exit
status. They are mounted here on a throw-away typer app exactly as the main CLI mounts them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from hostward.cli import risk_cmds
from hostward.cli.errors import CliError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _app() -> typer.Typer:
    app = typer.Typer()
    for group, name, fn in (
        ("baseline", "run", risk_cmds.baseline_run),
        ("vulns", "scan", risk_cmds.vulns_scan),
        ("weakpass", "check", risk_cmds.weakpass_check),
    ):
        sub = typer.Typer()
        sub.command(name)(fn)
        app.add_typer(sub, name=group)
    return app


def run(*args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) the way ``hostward.cli.main.run`` reports a CliError."""
    result = CliRunner().invoke(_app(), list(args))
    if isinstance(result.exception, CliError):
        return result.exception.exit_code, result.stdout, result.stderr + result.exception.message
    return result.exit_code, result.stdout, result.stderr


def test_baseline_run_prints_every_check_and_exits_by_result(tmp_path: Path) -> None:
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/sshd_config").write_text("PermitRootLogin yes\n")
    code, out, _ = run("baseline", "run", "--root", str(tmp_path), "--json")
    data = json.loads(out)
    results = {r["check_id"]: r for p in data["policies"] for r in p["results"]}
    assert results["ssh-root-login"]["result"] == "failed"
    assert code == risk_cmds.EXIT_FOUND
    code, out, _ = run(
        "baseline", "run", "--policy", str(SAMPLES / "sca" / "hw_test_ssh_audit.yml"), "--root", str(tmp_path)
    )
    assert "9101" in out and "failed" in out and code == 1


def test_baseline_run_with_a_broken_policy_reports_it_and_runs_the_others(tmp_path: Path) -> None:
    code, out, err = run(
        "baseline",
        "run",
        "--policy",
        str(SAMPLES / "sca" / "bad" / "duplicate_id.yml"),
        "--policy",
        str(SAMPLES / "sca" / "hw_test_system_audit.yml"),
        "--root",
        str(tmp_path),
    )
    assert code == risk_cmds.EXIT_INCOMPLETE
    assert "duplicate_id.yml:9:9: duplicate check id 7" in err
    assert "9200" in out


def test_vulns_scan_on_this_machine(tmp_path: Path) -> None:
    feeds = [
        "--feed",
        str(SAMPLES / "vulns" / "debian-tracker.json"),
        "--feed",
        str(SAMPLES / "vulns" / "osv"),
    ]
    code, out, _ = run("vulns", "scan", *feeds, "--os-only", "--json")
    data = json.loads(out)
    assert code == risk_cmds.EXIT_FOUND
    assert [f["package"] for f in data["findings"]] == ["glibc"]
    code, out, err = run(
        "vulns", "scan", *feeds, "--feed", str(SAMPLES / "vulns" / "malformed.json"), "--os-only"
    )
    assert "HWTEST-BAD-EVENT" in err and "glibc" in out and code == 1
    (tmp_path / "empty.json").write_text("[]")
    code, _, err = run("vulns", "scan", "--feed", str(tmp_path / "empty.json"))
    assert code == risk_cmds.EXIT_INCOMPLETE and "no advisory" in err


def test_weakpass_check_statuses(tmp_path: Path) -> None:
    code, out, _ = run("weakpass", "check", "--shadow", str(tmp_path / "missing"), "--json")
    assert code == risk_cmds.EXIT_INCOMPLETE and json.loads(out)["status"] == "missing"
    big = tmp_path / "list.txt"
    big.write_text("\n".join(f"x{i}" for i in range(301)))
    code, _, err = run("weakpass", "check", "--wordlist", str(big))
    assert code == risk_cmds.EXIT_INCOMPLETE and "at most 300" in err
    shadow = tmp_path / "shadow"
    from hostward.agent.weakpass.cryptlib import make_hash

    shadow.write_text(f"svc:{make_hash('Winter2024!', '$1$')}:19000:0:99999:7:::\n")
    (tmp_path / "mine.txt").write_text("Winter2024!\n")
    code, out, _ = run("weakpass", "check", "--shadow", str(shadow), "--wordlist", str(tmp_path / "mine.txt"))
    assert code == risk_cmds.EXIT_FOUND
    assert "svc" in out and "custom_list" in out and "Winter2024!" not in out
