"""Load baseline policies (ours and Wazuh SCA files) and run them against a host.

A policy file that cannot be loaded (YAML syntax, unknown rule type, bad regex, duplicate id) becomes a
:class:`PolicyError` with file, line and column; every other policy still runs. A check never crashes the
run: an unexpected exception while evaluating it makes that one check not applicable with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import hostward
from hostward.agent.baseline.host import DEFAULT_COMMAND_TIMEOUT_S, HostView
from hostward.agent.baseline.model import (
    BaselineReport,
    Check,
    CheckResult,
    Policy,
    PolicyError,
    PolicyRun,
    Result,
    aggregate,
)
from hostward.agent.baseline.native import KIND, NativeSyntaxError, parse_native
from hostward.agent.baseline.sca import ScaSyntaxError, parse_sca
from hostward.agent.baseline.yamlpos import YamlPosError, load

log = logging.getLogger(__name__)
POLICY_SUFFIXES = (".yml", ".yaml")
MAX_POLICY_BYTES = 4 * 1024 * 1024


def default_policy_dir() -> Path:
    """Our shipped policies (``content/baseline``)."""
    return Path(hostward.__file__).resolve().parent / "content" / "baseline"


def parse_policy_text(text: str, file: str) -> Policy:
    """Parse one policy document (either syntax); raises PolicyLoadError with the position."""
    try:
        doc, marks = load(text)
    except YamlPosError as exc:
        raise PolicyLoadError(PolicyError(file, exc.line, exc.column, exc.message)) from exc
    try:
        if isinstance(doc, dict) and doc.get("kind") == KIND:
            return parse_native(doc, file)
        return parse_sca(doc, file)
    except (NativeSyntaxError, ScaSyntaxError) as exc:
        line, column = marks.at(exc.path)
        raise PolicyLoadError(PolicyError(file, line, column, exc.message)) from exc


class PolicyLoadError(Exception):
    def __init__(self, error: PolicyError) -> None:
        super().__init__(str(error))
        self.error = error


def load_policy_file(path: Path) -> Policy:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyLoadError(
            PolicyError(str(path), None, None, f"cannot read: {exc.strerror or exc}")
        ) from exc
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyLoadError(PolicyError(str(path), None, None, "policy file larger than 4 MiB"))
    return parse_policy_text(raw.decode("utf-8", errors="replace"), str(path))


def _expand(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted(f for f in p.iterdir() if f.suffix in POLICY_SUFFIXES and f.is_file()))
        else:
            files.append(p)
    return files


def load_policies(paths: Iterable[Path]) -> tuple[list[Policy], list[PolicyError]]:
    """Policies from files and directories (``*.yml`` / ``*.yaml``); bad files become errors."""
    policies: list[Policy] = []
    errors: list[PolicyError] = []
    seen: dict[str, str] = {}
    for path in _expand(paths):
        try:
            policy = load_policy_file(path)
        except PolicyLoadError as exc:
            errors.append(exc.error)
            continue
        if policy.id in seen:
            errors.append(
                PolicyError(
                    str(path), None, None, f"policy id {policy.id!r} already loaded from {seen[policy.id]}"
                )
            )
            continue
        seen[policy.id] = str(path)
        policies.append(policy)
    return policies, errors


_VALUE_TO_RESULT: dict[bool | None, Result] = {True: "passed", False: "failed", None: "not_applicable"}


def evaluate_check(policy: Policy, check: Check, host: HostView) -> CheckResult:
    """Run one check; never raises."""
    try:
        if check.applies_if:
            applies, why = aggregate(check.applies_condition, check.applies_if, host)
            if applies is not True:
                reason = check.applies_reason or f"not applicable: {why}"
                return _result(policy, check, "not_applicable", reason)
        value, reason = aggregate(check.condition, check.rules, host)
    except Exception as exc:  # a bug in one rule must not stop the whole baseline run
        log.exception("baseline check %s/%s crashed", policy.id, check.id)
        return _result(policy, check, "not_applicable", f"internal error: {type(exc).__name__}: {exc}")
    return _result(policy, check, _VALUE_TO_RESULT[value], reason)


def _result(policy: Policy, check: Check, result: Result, reason: str) -> CheckResult:
    return CheckResult(
        policy_id=policy.id,
        check_id=check.id,
        title=check.title,
        severity=check.severity,
        result=result,
        reason=reason[:2000],
        rationale=check.rationale,
        remediation=check.remediation,
        description=check.description,
    )


def run_policy(policy: Policy, host: HostView) -> PolicyRun:
    started = time.perf_counter()
    met = True
    if policy.requirements is not None:
        try:
            value, why = aggregate(policy.requirements.condition, policy.requirements.rules, host)
        except Exception as exc:
            log.exception("requirements of baseline policy %s crashed", policy.id)
            value, why = None, f"internal error: {exc}"
        met = value is True
        if not met:
            desc = policy.requirements.description or "policy requirements"
            reason = f"requirements not met ({desc}): {why}"
            results = tuple(_result(policy, c, "not_applicable", reason) for c in policy.checks)
            return PolicyRun(
                policy.id,
                policy.name,
                policy.file,
                policy.syntax,
                results,
                False,
                time.perf_counter() - started,
            )
    results = tuple(evaluate_check(policy, c, host) for c in policy.checks)
    return PolicyRun(
        policy.id, policy.name, policy.file, policy.syntax, results, met, time.perf_counter() - started
    )


def run_baseline(
    paths: Sequence[Path] | None = None,
    *,
    root: Path = Path("/"),
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT_S,
    allow_commands: bool = True,
) -> BaselineReport:
    """Load ``paths`` (default: our shipped policies) and run every policy against ``root``.

    ``allow_commands=False`` makes command rules not applicable: set it for policies that came from
    somewhere other than the operator's own files (a policy pushed over the network must not be a way
    to run arbitrary commands as root).
    """
    started = time.perf_counter()
    policies, errors = load_policies(paths if paths else [default_policy_dir()])
    host = HostView(root=root, command_timeout=command_timeout, allow_commands=allow_commands)
    runs = tuple(run_policy(p, host) for p in policies)
    return BaselineReport(runs=runs, errors=tuple(errors), seconds=time.perf_counter() - started)
