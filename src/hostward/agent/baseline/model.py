"""Baseline check model shared by both policy syntaxes: rules, checks, policies, results.

A rule evaluates to an :class:`Outcome`: ``True`` (satisfied), ``False`` (not satisfied) or ``None``
(could not be evaluated: missing target, unreadable file, command timed out). A check aggregates its
rules with ``all`` / ``any`` / ``none`` exactly as Wazuh SCA does (see :func:`aggregate`), so a check is
``passed``, ``failed`` or ``not_applicable`` with a reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from hostward.agent.baseline.host import HostView

Result = Literal["passed", "failed", "not_applicable"]
Condition = Literal["all", "any", "none"]
CheckSeverity = Literal["critical", "high", "medium", "low"]
RESULTS: tuple[Result, ...] = ("passed", "failed", "not_applicable")
CONDITIONS: tuple[Condition, ...] = ("all", "any", "none")
SEVERITIES: tuple[CheckSeverity, ...] = ("critical", "high", "medium", "low")


@dataclass(frozen=True)
class Outcome:
    """What one rule found: ``value`` None means "could not be evaluated" (with the reason)."""

    value: bool | None
    reason: str


class Rule(Protocol):
    """A compiled rule: ``text`` is how it is shown in reasons; ``evaluate`` does the I/O via ``host``."""

    @property
    def text(self) -> str: ...

    def evaluate(self, host: HostView) -> Outcome: ...


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    condition: Condition
    rules: tuple[Rule, ...]
    severity: CheckSeverity = "medium"
    description: str = ""
    rationale: str = ""
    remediation: str = ""
    references: tuple[str, ...] = ()
    compliance: dict[str, list[str]] = field(default_factory=dict)
    # Native checks only: when these rules (aggregated with ``applies_condition``) are not satisfied the
    # check is not applicable (e.g. an nginx check on a host without nginx).
    applies_if: tuple[Rule, ...] = ()
    applies_condition: Condition = "all"
    applies_reason: str = ""


@dataclass(frozen=True)
class Requirements:
    """Policy-level precondition: when not satisfied, every check of the policy is not applicable."""

    description: str
    condition: Condition
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class Policy:
    id: str
    name: str
    file: str
    syntax: Literal["hostward", "sca"]
    checks: tuple[Check, ...]
    description: str = ""
    requirements: Requirements | None = None
    # Raw check documents (native syntax) keyed by check id: the samples live there.
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyError:
    """A policy file that could not be loaded: where and why. The other policies still run."""

    file: str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "column": self.column, "message": self.message}


@dataclass(frozen=True)
class CheckResult:
    policy_id: str
    check_id: str
    title: str
    severity: CheckSeverity
    result: Result
    reason: str
    rationale: str = ""
    remediation: str = ""
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "check_id": self.check_id,
            "title": self.title,
            "severity": self.severity,
            "result": self.result,
            "reason": self.reason,
            "rationale": self.rationale,
            "remediation": self.remediation,
            "description": self.description,
        }


@dataclass(frozen=True)
class PolicyRun:
    policy_id: str
    name: str
    file: str
    syntax: str
    results: tuple[CheckResult, ...]
    requirements_met: bool
    seconds: float

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(RESULTS, 0)
        for r in self.results:
            out[r.result] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "name": self.name,
            "file": self.file,
            "syntax": self.syntax,
            "requirements_met": self.requirements_met,
            "seconds": round(self.seconds, 4),
            "counts": self.counts(),
            "results": [r.to_dict() for r in self.results],
        }


@dataclass(frozen=True)
class BaselineReport:
    """Everything one baseline run produced: per-policy results and the files that could not load."""

    runs: tuple[PolicyRun, ...]
    errors: tuple[PolicyError, ...]
    seconds: float

    @property
    def results(self) -> list[CheckResult]:
        return [r for run in self.runs for r in run.results]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(RESULTS, 0)
        for r in self.results:
            out[r.result] += 1
        return out

    def pass_rate(self) -> float | None:
        """passed / (passed + failed) in percent, like the console's safe-settings rate."""
        c = self.counts()
        judged = c["passed"] + c["failed"]
        return None if judged == 0 else round(100.0 * c["passed"] / judged, 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 4),
            "counts": self.counts(),
            "pass_rate": self.pass_rate(),
            "policies": [run.to_dict() for run in self.runs],
            "errors": [e.to_dict() for e in self.errors],
        }


def aggregate(condition: Condition, rules: Sequence[Rule], host: HostView) -> tuple[bool | None, str]:
    """Evaluate ``rules`` under ``condition`` with Wazuh SCA's semantics; (value, reason).

    ``all``: False as soon as a rule is False; otherwise None if any rule was None; else True.
    ``any``: True as soon as a rule is True; otherwise None if any rule was None; else False.
    ``none``: False as soon as a rule is True; otherwise None if any rule was None; else True.
    Evaluation stops at the deciding rule (so a later slow command is not run needlessly).
    """
    invalid: list[str] = []
    satisfied: list[str] = []
    unsatisfied: list[str] = []
    for rule in rules:
        out = rule.evaluate(host)
        if out.value is None:
            invalid.append(out.reason)
            continue
        if condition == "all" and out.value is False:
            return False, out.reason
        if condition == "any" and out.value is True:
            return True, out.reason
        if condition == "none" and out.value is True:
            return False, out.reason
        (satisfied if out.value else unsatisfied).append(out.reason)
    if invalid:
        return None, invalid[0]
    if condition == "all":
        return True, _join(satisfied) or "all rules satisfied"
    if condition == "any":
        return False, _join(unsatisfied) or "no rule satisfied"
    return True, _join(unsatisfied) or "no rule matched"


def _join(reasons: list[str]) -> str:
    return "; ".join(list(dict.fromkeys(reasons))[:3])
