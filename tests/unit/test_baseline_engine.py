"""Baseline engine: our syntax's validation (errors with positions), commands with timeouts, the real
/etc of this machine, and robustness (a crashing rule does not stop the run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hostward.agent.baseline import (
    HostView,
    PolicyLoadError,
    default_policy_dir,
    load_policies,
    parse_policy_text,
    run_baseline,
    run_command,
    run_policy,
)
from hostward.agent.baseline.model import Check, Outcome, Policy

HEADER = "kind: hostward-baseline\npolicy: {id: t, name: test}\nchecks:\n"


def _policy(body: str) -> Policy:
    return parse_policy_text(HEADER + body, "t.yaml")


def _error(body: str) -> str:
    with pytest.raises(PolicyLoadError) as info:
        _policy(body)
    return str(info.value.error)


CHECK = "  - id: c1\n    title: T\n    rationale: R\n    remediation: M\n"


def test_native_errors_name_line_and_column() -> None:
    assert _error(CHECK + "    rules:\n      - {file: /etc/x, contians: 'a'}\n").startswith(
        "t.yaml:9:9: unknown key(s)"
    )
    assert "t.yaml:9:34: invalid regex" in _error(
        CHECK + "    rules:\n      - {file: /etc/x, contains: '('}\n"
    )
    assert "max_mode must be a quoted octal" in _error(
        CHECK + "    rules:\n      - {file: /etc/x, max_mode: 644}\n"
    )
    assert "needs a comparison" in _error(CHECK + "    rules:\n      - {sysctl: net.ipv4.ip_forward}\n")
    assert "t.yaml:8:15: severity must be" in _error(
        CHECK + "    severity: urgent\n    rules: [{file: /x}]\n"
    )
    assert "duplicate check id c1" in _error(
        CHECK + "    rules: [{file: /x}]\n" + CHECK + "    rules: [{file: /x}]\n"
    )
    assert "needs a rationale" in _error("  - {id: c2, title: T, remediation: M, rules: [{file: /x}]}\n")
    assert "duplicate key 'title'" in _error(CHECK + "    title: again\n    rules: [{file: /x}]\n")


def test_merge_keys_provide_defaults_that_written_keys_override(tmp_path: Path) -> None:
    policy = parse_policy_text(
        "kind: hostward-baseline\ndefinitions:\n  d: &d {file: /etc/a.conf, missing: failed}\n"
        "policy: {id: t, name: t}\nchecks:\n"
        + CHECK
        + "    rules:\n      - <<: *d\n        missing: passed\n"
        "        contains: 'x'\n",
        "t.yaml",
    )
    run = run_policy(policy, HostView(root=tmp_path))
    assert run.results[0].result == "passed"  # missing overridden from failed to passed


def test_command_rule_output_and_exit_code(tmp_path: Path) -> None:
    policy = _policy(
        CHECK
        + "    rules:\n      - {command: \"sh -c 'echo hello; exit 3'\", output_contains: '^hello$',\n"
        + "         exit_code: 3}\n"
    )
    assert run_policy(policy, HostView(root=tmp_path)).results[0].result == "passed"
    blocked = run_policy(policy, HostView(root=tmp_path, allow_commands=False)).results[0]
    assert blocked.result == "not_applicable"
    assert "commands are disabled" in blocked.reason


def test_hanging_command_and_its_children_are_killed() -> None:
    started = time.monotonic()
    out = run_command(("sh", "-c", "sleep 60 & sleep 60; echo never"), timeout=0.5)
    assert time.monotonic() - started < 4
    assert out.timed_out and out.returncode is None
    assert "timed out after 0.5 s" in out.error


def test_command_output_is_bounded() -> None:
    out = run_command(("sh", "-c", "yes 0123456789"), timeout=5, max_output=100_000)
    assert not out.timed_out
    assert 100_000 <= len(out.stdout.encode()) <= 100_000 + 65536


def test_native_command_timeout_in_a_check(tmp_path: Path) -> None:
    policy = _policy(CHECK + "    rules:\n      - {command: 'sleep 30', timeout: 0.5, output_contains: x}\n")
    started = time.monotonic()
    result = run_policy(policy, HostView(root=tmp_path)).results[0]
    assert time.monotonic() - started < 4
    assert result.result == "not_applicable"
    assert "timed out" in result.reason


class _Boom:
    text = "boom"

    def evaluate(self, host: HostView) -> Outcome:
        raise RuntimeError("broken rule")


def test_a_crashing_rule_makes_only_its_check_not_applicable(tmp_path: Path) -> None:
    good = _policy(CHECK + "    rules: [{file: /nothing, exists: false}]\n")
    bad = Check(id="boom", title="boom", condition="all", rules=(_Boom(),))
    policy = Policy(good.id, good.name, good.file, "hostward", (bad, *good.checks))
    results = run_policy(policy, HostView(root=tmp_path)).results
    assert results[0].result == "not_applicable" and "RuntimeError: broken rule" in results[0].reason
    assert results[1].result == "passed"


def test_default_policies_on_this_machines_real_etc() -> None:
    report = run_baseline()
    policies, _ = load_policies([default_policy_dir()])
    expected = {(p.id, c.id) for p in policies for c in p.checks}
    assert report.errors == ()
    assert {(r.policy_id, r.check_id) for r in report.results} == expected
    for r in report.results:
        assert r.result in ("passed", "failed", "not_applicable")
        assert r.reason and "internal error" not in r.reason, (r.check_id, r.reason)
    assert report.seconds < 10
    # This machine has sshd_config and /etc/passwd, so those policies were really judged.
    by_id = {r.check_id: r for r in report.results}
    assert by_id["acct-uid0-only-root"].result in ("passed", "failed")
    assert by_id["ssh-empty-passwords"].result in ("passed", "failed")
