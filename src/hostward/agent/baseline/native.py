"""hostward's own baseline syntax (``kind: hostward-baseline``), parsed into the shared model.

Schema (see content/baseline/README.md for the full description)::

    kind: hostward-baseline
    policy: {id, name, description}
    requirements: {description, condition, rules}       # optional; unmet -> every check not applicable
    checks:
      - id, title, severity (critical|high|medium|low), rationale, remediation, description
        condition: all | any | none                     # default all
        rules: [RULE, ...]
        applies_if: {condition, rules, reason}          # optional; unmet -> not applicable
        samples: [{expect: passed|failed|not_applicable, files: {...}, links: {...}, dirs: [...]}]

Unknown keys are errors: a typo in a security check must not turn it into a check that always passes.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from hostward.agent.baseline.model import CONDITIONS, SEVERITIES, Check, Condition, Policy, Requirements, Rule
from hostward.agent.baseline.rules import (
    MISSING_CHOICES,
    CommandRule,
    Expect,
    FileRule,
    Includes,
    PackageRule,
    ProcessRule,
    ServiceRule,
    SettingRule,
    SysctlRule,
    parse_compare,
)

KIND = "hostward-baseline"
_EXPECT_KEYS = {"equals", "not_in", "compare", "matches", "excludes_items", "ignore_case"}
_RULE_KEYS: dict[str, set[str]] = {
    "file": {"exists", "contains", "lacks", "max_mode", "owner", "group", "missing", "includes", "not"},
    "setting": {
        "file",
        "separator",
        "occurrence",
        "default",
        "stop_at",
        "includes",
        "strip",
        "missing",
        "not",
    }
    | _EXPECT_KEYS,
    "sysctl": {"not"} | _EXPECT_KEYS,
    "process": {"running"},
    "service": {"enabled"},
    "package": {"installed"},
    "command": {"timeout", "output_contains", "output_lacks", "exit_code", "not"},
}
_CHECK_KEYS = {
    "id",
    "title",
    "severity",
    "rationale",
    "remediation",
    "description",
    "condition",
    "rules",
    "applies_if",
    "samples",
    "references",
}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

PathT = tuple[str | int, ...]


class NativeSyntaxError(ValueError):
    def __init__(self, message: str, path: PathT) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def _strs(value: Any, path: PathT, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            item = "yes" if item else "no"  # YAML 1.1 reads a bare no as False
        if not isinstance(item, str | int | float) or str(item) == "":
            raise NativeSyntaxError(f"{what} must be a string or a list of strings", path)
        out.append(str(item))
    return tuple(out)


def _regex(value: Any, path: PathT) -> re.Pattern[str]:
    if not isinstance(value, str):
        raise NativeSyntaxError("a regex must be a string", path)
    try:
        return re.compile(value)
    except re.error as exc:
        raise NativeSyntaxError(f"invalid regex {value!r}: {exc}", path) from exc


def _expect(raw: dict[str, Any], path: PathT) -> Expect:
    compare = None
    if "compare" in raw:
        try:
            compare = parse_compare(raw["compare"])
        except ValueError as exc:
            raise NativeSyntaxError(str(exc), (*path, "compare")) from exc
    return Expect(
        equals=_strs(raw["equals"], (*path, "equals"), "equals") if "equals" in raw else (),
        not_in=_strs(raw["not_in"], (*path, "not_in"), "not_in") if "not_in" in raw else (),
        compare=compare,
        matches=_regex(raw["matches"], (*path, "matches")) if "matches" in raw else None,
        excludes_items=_strs(raw["excludes_items"], (*path, "excludes_items"), "excludes_items")
        if "excludes_items" in raw
        else (),
        ignore_case=bool(raw.get("ignore_case", True)),
    )


def _includes(raw: Any, path: PathT) -> Includes | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"directive", "base"}:
        raise NativeSyntaxError("includes must be {directive: NAME, base: /host/dir}", path)
    return Includes(str(raw["directive"]), str(raw["base"]))


def _missing(raw: dict[str, Any], path: PathT) -> str:
    value = str(raw.get("missing", "not_applicable"))
    if value not in MISSING_CHOICES:
        raise NativeSyntaxError(f"missing must be one of {', '.join(MISSING_CHOICES)}", (*path, "missing"))
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, path: PathT) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise NativeSyntaxError(f"{key} must be true or false", (*path, key))
    return value


def parse_rule(raw: Any, path: PathT) -> Rule:
    """One rule mapping; raises NativeSyntaxError naming the offending key."""
    if not isinstance(raw, dict):
        raise NativeSyntaxError("a rule must be a mapping with one of: " + ", ".join(_RULE_KEYS), path)
    # ``file`` is also a parameter of setting rules, so it names the rule type only on its own.
    kinds = [k for k in raw if k in _RULE_KEYS and k != "file"] or [k for k in raw if k == "file"]
    if len(kinds) != 1:
        raise NativeSyntaxError("a rule needs exactly one of: " + ", ".join(_RULE_KEYS), path)
    kind = kinds[0]
    unknown = set(raw) - {kind} - _RULE_KEYS[kind]
    if unknown:
        raise NativeSyntaxError(f"unknown key(s) for a {kind} rule: {', '.join(sorted(unknown))}", path)
    text = f"{kind}: {raw[kind]}"
    negated = _bool(raw, "not", False, path)
    if kind == "file":
        mode = raw.get("max_mode")
        if mode is not None and (not isinstance(mode, str) or not re.fullmatch(r"0?[0-7]{3,4}", mode)):
            raise NativeSyntaxError("max_mode must be a quoted octal string like '0644'", (*path, "max_mode"))
        exists = raw.get("exists")
        if exists is not None and not isinstance(exists, bool):
            raise NativeSyntaxError("exists must be true or false", (*path, "exists"))
        return FileRule(
            text=text,
            files=_strs(raw["file"], (*path, "file"), "file"),
            exists=exists,
            contains=_regex(raw["contains"], (*path, "contains")) if "contains" in raw else None,
            lacks=_regex(raw["lacks"], (*path, "lacks")) if "lacks" in raw else None,
            max_mode=int(mode, 8) if mode else None,
            owner=_strs(raw["owner"], (*path, "owner"), "owner") if "owner" in raw else (),
            group=_strs(raw["group"], (*path, "group"), "group") if "group" in raw else (),
            missing=_missing(raw, path),
            includes=_includes(raw.get("includes"), (*path, "includes")),
            negated=negated,
        )
    if kind == "setting":
        if "file" not in raw:
            raise NativeSyntaxError("a setting rule needs file", path)
        expect = _expect(raw, path)
        if expect.empty:
            raise NativeSyntaxError("a setting rule needs a comparison (equals, compare, ...)", path)
        occurrence = str(raw.get("occurrence", "first"))
        if occurrence not in ("first", "last"):
            raise NativeSyntaxError("occurrence must be first or last", (*path, "occurrence"))
        default = raw.get("default")
        return SettingRule(
            text=text,
            key=str(raw["setting"]),
            files=_strs(raw["file"], (*path, "file"), "file"),
            expect=expect,
            separator=str(raw.get("separator", "")),
            occurrence=occurrence,
            default=None if default is None else _strs(default, (*path, "default"), "default")[0],
            stop_at=_regex(raw["stop_at"], (*path, "stop_at")) if "stop_at" in raw else None,
            includes=_includes(raw.get("includes"), (*path, "includes")),
            strip=str(raw.get("strip", "\"';")),
            missing=_missing(raw, path),
            negated=negated,
        )
    if kind == "sysctl":
        expect = _expect(raw, path)
        if expect.empty:
            raise NativeSyntaxError("a sysctl rule needs a comparison (equals, compare, ...)", path)
        return SysctlRule(text=text, key=str(raw["sysctl"]), expect=expect, negated=negated)
    if kind == "process":
        return ProcessRule(
            text, _strs(raw["process"], (*path, "process"), "process"), _bool(raw, "running", True, path)
        )
    if kind == "service":
        return ServiceRule(
            text, _strs(raw["service"], (*path, "service"), "service"), _bool(raw, "enabled", True, path)
        )
    if kind == "package":
        return PackageRule(
            text, _strs(raw["package"], (*path, "package"), "package"), _bool(raw, "installed", True, path)
        )
    command = raw["command"]
    try:
        argv = tuple(shlex.split(command)) if isinstance(command, str) else tuple(str(a) for a in command)
    except ValueError as exc:
        raise NativeSyntaxError(f"cannot parse the command: {exc}", (*path, "command")) from exc
    if not argv:
        raise NativeSyntaxError("empty command", (*path, "command"))
    timeout = raw.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise NativeSyntaxError("timeout must be a positive number of seconds", (*path, "timeout"))
    exit_code = raw.get("exit_code")
    return CommandRule(
        text=text,
        argv=argv,
        timeout=float(timeout) if timeout is not None else None,
        output_contains=_regex(raw["output_contains"], (*path, "output_contains"))
        if "output_contains" in raw
        else None,
        output_lacks=_regex(raw["output_lacks"], (*path, "output_lacks")) if "output_lacks" in raw else None,
        exit_code=int(exit_code) if exit_code is not None else None,
        negated=negated,
    )


def _condition(value: Any, path: PathT) -> Condition:
    if value not in CONDITIONS:
        raise NativeSyntaxError(f"condition must be one of all, any, none (got {value!r})", path)
    return value


def _rule_list(raw: Any, path: PathT) -> tuple[Rule, ...]:
    if not isinstance(raw, list) or not raw:
        raise NativeSyntaxError("rules must be a non-empty list", path)
    return tuple(parse_rule(r, (*path, i)) for i, r in enumerate(raw))


def parse_native(doc: dict[str, Any], file: str) -> Policy:
    """Build a Policy from a parsed ``kind: hostward-baseline`` document."""
    # ``definitions`` holds YAML anchors reused by rules (``<<: *sshd``); it is not read otherwise.
    unknown = set(doc) - {"kind", "definitions", "policy", "requirements", "checks"}
    if unknown:
        raise NativeSyntaxError(f"unknown top-level key(s): {', '.join(sorted(unknown))}", ())
    policy = doc.get("policy")
    if not isinstance(policy, dict) or not policy.get("id") or not policy.get("name"):
        raise NativeSyntaxError("'policy' must be a mapping with 'id' and 'name'", ("policy",))
    requirements = None
    if (req := doc.get("requirements")) is not None:
        if not isinstance(req, dict):
            raise NativeSyntaxError("requirements must be a mapping", ("requirements",))
        requirements = Requirements(
            description=str(req.get("description", "")),
            condition=_condition(req.get("condition", "all"), ("requirements", "condition")),
            rules=_rule_list(req.get("rules"), ("requirements", "rules")),
        )
    checks_raw = doc.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise NativeSyntaxError("'checks' must be a non-empty list", ("checks",))
    checks: list[Check] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    for i, raw in enumerate(checks_raw):
        path: PathT = ("checks", i)
        if not isinstance(raw, dict):
            raise NativeSyntaxError("a check must be a mapping", path)
        unknown = set(raw) - _CHECK_KEYS
        if unknown:
            raise NativeSyntaxError(f"unknown check key(s): {', '.join(sorted(unknown))}", path)
        cid = raw.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            raise NativeSyntaxError(
                "check id must be lowercase letters, digits, '.', '_' or '-'", (*path, "id")
            )
        if cid in samples:
            raise NativeSyntaxError(f"duplicate check id {cid}", (*path, "id"))
        for key in ("title", "rationale", "remediation"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise NativeSyntaxError(f"check {cid} needs a {key}", path)
        severity = raw.get("severity", "medium")
        if severity not in SEVERITIES:
            raise NativeSyntaxError(f"severity must be one of {', '.join(SEVERITIES)}", (*path, "severity"))
        applies: tuple[Rule, ...] = ()
        applies_condition: Condition = "all"
        applies_reason = ""
        if (app := raw.get("applies_if")) is not None:
            if not isinstance(app, dict) or "rules" not in app:
                raise NativeSyntaxError(
                    "applies_if must be {condition, rules, reason}", (*path, "applies_if")
                )
            applies = _rule_list(app["rules"], (*path, "applies_if", "rules"))
            applies_condition = _condition(app.get("condition", "all"), (*path, "applies_if", "condition"))
            applies_reason = str(app.get("reason", ""))
        sample_list = raw.get("samples") or []
        if not isinstance(sample_list, list):
            raise NativeSyntaxError("samples must be a list", (*path, "samples"))
        samples[cid] = sample_list
        checks.append(
            Check(
                id=cid,
                title=raw["title"].strip(),
                condition=_condition(raw.get("condition", "all"), (*path, "condition")),
                rules=_rule_list(raw.get("rules"), (*path, "rules")),
                severity=severity,
                description=str(raw.get("description", "")).strip(),
                rationale=raw["rationale"].strip(),
                remediation=raw["remediation"].strip(),
                references=tuple(str(r) for r in raw.get("references") or []),
                applies_if=applies,
                applies_condition=applies_condition,
                applies_reason=applies_reason,
            )
        )
    return Policy(
        id=str(policy["id"]),
        name=str(policy["name"]),
        file=file,
        syntax="hostward",
        checks=tuple(checks),
        description=str(policy.get("description", "")).strip(),
        requirements=requirements,
        samples=samples,
    )
