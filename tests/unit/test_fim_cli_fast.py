"""``hostward fim init|check`` through the console entry point: the plain lines skip typer entirely,
everything else (help, usage errors) still goes through it and looks as before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hostward.cli.fim_standalone import parse_fast
from hostward.cli.main import run


def hostward(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``hostward ARGS`` run in this process."""
    with pytest.raises(SystemExit) as exited:
        run(list(args))
    out = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "t"
    (t / "sub").mkdir(parents=True)
    (t / "a").write_text("a\n")
    (t / "sub" / "b").write_text("b\n")
    return t


def test_plain_lines_parse_like_the_typer_commands() -> None:
    command, opts, args = parse_fast(
        ["init", "--db", "x.db", "p1", "--ignore", "*.log", "p2", "--ignore=*.tmp"]
    )
    assert (command, args) == ("init", ["p1", "p2"])
    assert opts["--db"] == "x.db" and opts["--ignore"] == ["*.log", "*.tmp"] and opts["--workers"] == 2
    assert opts["--defaults"] is False
    command, opts, args = parse_fast(
        ["check", "--db=b", "--json", "--no-packages", "--workers", "3", "--db", "c"]
    )
    assert (command, args, opts["--db"], opts["--workers"]) == ("check", [], "c", 3)  # the last one wins
    assert opts["--json"] is True and opts["--packages"] is False and opts["--full"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["init", "--help"],
        ["check", "--db", "x", "-h"],
        ["check"],  # missing --db
        ["check", "--db"],  # missing value
        ["check", "--db", "--json"],  # an option where the value should be
        ["check", "--db", "x", "extra"],
        ["init", "--db", "x", "--workers", "two", "p"],
        ["init", "--db", "x", "--", "-p"],
        ["check", "--db", "x", "--json=yes"],
        ["check", "--db", "x", "--unknown"],
        ["changes", "--json"],
        [],
    ],
)
def test_anything_unusual_is_left_to_typer(argv: list[str]) -> None:
    assert parse_fast(argv) is None


def test_init_and_check_without_loading_typer(tmp_path: Path, tree: Path) -> None:
    # A fresh interpreter, as the console script runs: the plain lines never import typer or pydantic.
    db = tmp_path / "fim.db"
    probe = (
        "import sys\n"
        "from hostward.cli.main import run\n"
        "try:\n"
        "    run(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    loaded = sorted(m for m in ('typer', 'pydantic', 'click') if m in sys.modules)\n"
        "    sys.stderr.write(f'loaded={loaded}\\n')\n"
        "    raise\n"
    )
    init = subprocess.run(
        [sys.executable, "-c", probe, "fim", "init", "--db", str(db), str(tree)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0 and "baseline written" in init.stdout and "loaded=[]" in init.stderr
    (tree / "a").write_text("changed\n")
    check = subprocess.run(
        [sys.executable, "-c", probe, "fim", "check", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 1 and "loaded=[]" in check.stderr
    assert [c["path"] for c in json.loads(check.stdout)["changed"]] == [str(tree / "a")]


def test_fast_lines_report_and_exit_like_the_full_cli(
    tmp_path: Path, tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "fim.db"
    code, out, _ = hostward(capsys, "fim", "init", "--db", str(db), str(tree))
    assert code == 0 and out.startswith(f"baseline written to {db}: 4 entries")
    code, out, _ = hostward(capsys, "fim", "check", "--db", str(db))
    assert code == 0 and out.startswith("added: 0, removed: 0, changed: 0, moved: 0")
    (tree / "sub" / "b").unlink()
    code, out, _ = hostward(capsys, "fim", "check", "--db", str(db), "--no-packages")
    assert code == 1 and any(line.startswith("removed  ") for line in out.splitlines())
    # Errors: one line on stderr, exit status 2, as the typer commands report them.
    code, _, err = hostward(capsys, "fim", "check", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and err == f"error: {tmp_path / 'missing.db'}: no baseline (run init first)\n"
    code, _, err = hostward(capsys, "fim", "init", "--db", str(db))
    assert code == 2 and err == "error: give at least one PATH (or --defaults)\n"
    code, _, err = hostward(capsys, "fim", "init", "--db", str(db), "--rate", "fast", str(tree))
    assert code == 2 and err.startswith("error: --rate: 'fast' is not a byte rate")


def test_help_and_usage_errors_still_come_from_typer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = hostward(capsys, "fim", "check", "--help")
    assert code == 0 and "--db" in out and "--no-packages" in out
    code, _, err = hostward(capsys, "fim", "check")
    assert code == 2 and "Missing option '--db'" in err
    code, _, err = hostward(
        capsys, "fim", "init", "--db", str(tmp_path / "x"), "--workers", "two", str(tmp_path)
    )
    assert code == 2 and "--workers" in err
