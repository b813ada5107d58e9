"""``hostward fim init|check`` on real temp trees: output, JSON, exit statuses."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hostward.cli.errors import CliError
from hostward.cli.fim_cmds import fim_app, parse_rate


def run(*args: str) -> tuple[int, str]:
    """Invoke the sub-app as ``hostward fim`` does: a CliError becomes its exit status."""
    result = CliRunner().invoke(fim_app, list(args))
    if isinstance(result.exception, CliError):
        return result.exception.exit_code, result.exception.message
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    t = tmp_path / "t"
    (t / "sub").mkdir(parents=True)
    (t / "a").write_text("a\n")
    (t / "sub" / "b").write_text("b\n")
    (t / "caf\udce9").write_text("latin-1 name\n")  # surrogate-escaped: the file name is b"caf\xe9"
    return t


def test_init_then_check_unchanged_exits_0(tmp_path: Path, tree: Path) -> None:
    db = tmp_path / "fim.db"
    code, out = run("init", "--db", str(db), str(tree))
    assert code == 0 and "baseline written" in out and "5 entries" in out
    code, out = run("check", "--db", str(db))
    assert code == 0 and out.startswith("added: 0, removed: 0, changed: 0, moved: 0")


def test_check_reports_changes_with_attributes_and_exits_1(tmp_path: Path, tree: Path) -> None:
    db = tmp_path / "fim.db"
    run("init", "--db", str(db), str(tree))
    (tree / "a").write_text("a modified\n")
    (tree / "sub" / "b").unlink()
    (tree / "new").write_text("n\n")
    os.chmod(tree / "caf\udce9", 0o600)
    code, out = run("check", "--db", str(db))
    assert code == 1
    lines = out.splitlines()
    assert any(line.startswith("added    ") and line.endswith("/t/new") for line in lines)
    assert any(line.startswith("removed  ") and line.endswith("/t/sub/b") for line in lines)
    assert any(line.endswith("/t/caf\\xe9") for line in lines)
    assert any(line.strip().startswith("mode    0644 -> 0600") for line in lines)
    assert any(line.strip().startswith("size    2 -> 11") for line in lines)
    code, out = run("check", "--db", str(db), "--json")
    data = json.loads(out)
    assert code == 1
    assert data["summary"]["added"] == 1 and data["summary"]["removed"] == 1
    changed = {c["path"]: c for c in data["changed"]}
    a = changed[str(tree / "a")]
    assert (
        set(a["attributes"]) >= {"sha256", "size", "mtime"}
        and a["old"]["size"] == 2
        and a["new"]["size"] == 11
    )
    # --update accepts the new state; the next check is clean.
    assert run("check", "--db", str(db), "--update")[0] == 1
    assert run("check", "--db", str(db))[0] == 0


def test_full_rehashes_everything(tmp_path: Path, tree: Path) -> None:
    db = tmp_path / "fim.db"
    run("init", "--db", str(db), str(tree))
    code, out = run("check", "--db", str(db), "--full", "--json")
    assert code == 0 and json.loads(out)["stats"]["files_hashed"] == 3


def test_errors_exit_2(tmp_path: Path, tree: Path) -> None:
    code, message = run("check", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "no baseline" in message
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    assert run("check", "--db", str(tmp_path / "junk.db"))[0] == 2
    assert run("init", "--db", str(tmp_path / "x.db"), "--rate", "fast", str(tree))[0] == 2
    assert run("init", "--db", str(tmp_path / "no-such-dir" / "x.db"), str(tree))[0] == 2
    assert run("check")[0] == 2  # usage error (missing --db)


def test_rate_parsing() -> None:
    assert parse_rate("50M") == 50 * 1024 * 1024
    assert parse_rate("512k") == 512 * 1024
    assert parse_rate("1.5GiB/s") == int(1.5 * 1024**3)
    assert parse_rate("1000") == 1000
    assert parse_rate(None) is None and parse_rate("0") is None


def test_subapp_is_a_typer_app() -> None:
    assert isinstance(fim_app, typer.Typer)


def test_defaults_record_the_important_files(tmp_path: Path) -> None:
    db = tmp_path / "fim.db"
    code, out = run("init", "--db", str(db), "--defaults")
    assert code == 0 and "baseline written" in out
    code, out = run("check", "--db", str(db), "--json")
    paths = {c["path"] for k in ("added", "removed", "changed", "moved") for c in json.loads(out)[k]}
    assert "/etc/passwd" not in paths  # recorded, and unchanged a moment later
    assert run("init", "--db", str(db))[0] == 2  # neither PATH nor --defaults


def test_check_keeps_the_package_index_next_to_the_baseline(tmp_path: Path, tree: Path) -> None:
    from hostward.agent.fim.pkgdb import CACHE_SETTLE_NS, DpkgIndex

    if not DpkgIndex.available():
        pytest.skip("no dpkg database on this host")
    dpkg = Path("/var/lib/dpkg")
    newest = max((dpkg / "info").stat().st_mtime_ns, (dpkg / "status").stat().st_mtime_ns)
    if newest > time.time_ns() - CACHE_SETTLE_NS:
        pytest.skip("the package database is being written right now")
    db = tmp_path / "fim.db"
    run("init", "--db", str(db), str(tree))
    (tree / "a").write_text("a modified\n")
    code, no_packages = run("check", "--db", str(db), "--json", "--no-packages")
    assert code == 1 and not Path(f"{db}.pkgindex").exists()
    code, first = run("check", "--db", str(db), "--json")
    assert code == 1 and Path(f"{db}.pkgindex").exists()
    code, second = run("check", "--db", str(db), "--json")  # answered from the cache: same report
    strip = re.compile(r'"seconds":[0-9.]+')
    assert code == 1 and strip.sub("", first) == strip.sub("", second) == strip.sub("", no_packages)
