"""Wazuh SCA policy files, read as they are: ``policy`` / ``requirements`` / ``variables`` / ``checks``.

Rules: ``[not ]TYPE:LOCATION[ -> PATTERN]`` with TYPE ``f`` (comma-separated files), ``d`` (directories,
``d:DIR -> NAME[ -> PATTERN]``, recursive), ``c`` (command output), ``p`` (running process) and ``r``
(Windows registry: not applicable here). A PATTERN is minterms joined by `` && ``, each optionally
negated with ``!``: ``r:REGEX`` (OS_Regex, or PCRE2 with ``regex_type: pcre2``), ``n:REGEX compare OP N``
(first capture group compared as an integer) or a literal whole-line, case-insensitive comparison.
Content rules are true when one line satisfies every minterm; a missing target makes them not
applicable. Everything is validated at load time, so a broken pattern is reported with its line and
column instead of silently never matching.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostward.agent.baseline.host import HostView
from hostward.agent.baseline.model import CONDITIONS, Check, Condition, Outcome, Policy, Requirements, Rule
from hostward.agent.baseline.osregex import (
    OsRegexError,
    compile_osmatch,
    compile_osregex,
    compile_pcre2,
)
from hostward.agent.baseline.yamlpos import Marks

ARROW = " -> "
_RULE_HEAD = re.compile(r"^(?P<neg>not\s+|NOT\s+|!)?(?P<type>[a-zA-Z]):(?P<rest>.*)$", re.S)
_COMPARE = re.compile(r"^(?P<regex>.*) compare (?P<op><=|>=|==|!=|<|>)\s*(?P<value>-?\d+)\s*$", re.S)
_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}
_LEGACY_CONDITIONS = {"all required": "all", "any required": "any"}


class ScaSyntaxError(ValueError):
    def __init__(self, message: str, path: tuple[str | int, ...]) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


@dataclass(frozen=True)
class Minterm:
    negated: bool
    kind: str  # "r" | "n" | "literal"
    regex: re.Pattern[str] | None
    literal: str = ""
    op: str = ""
    value: int = 0

    def test(self, line: str) -> bool:
        if self.kind == "literal":
            hit = line.lower() == self.literal.lower()
        elif self.kind == "r":
            assert self.regex is not None
            hit = self.regex.search(line) is not None
        else:
            assert self.regex is not None
            m = self.regex.search(line)
            hit = False
            if m is not None:
                captured = next((g for g in m.groups() if g is not None), None)
                if captured is not None and captured.strip().lstrip("-").isdigit():
                    hit = _OPS[self.op](int(captured), self.value)
        return hit != self.negated


@dataclass(frozen=True)
class LinePattern:
    """Minterms joined by `` && ``: a line matches when every minterm holds."""

    text: str
    minterms: tuple[Minterm, ...]

    def matches(self, line: str) -> bool:
        return all(m.test(line) for m in self.minterms)

    def first_match(self, lines: list[str]) -> str | None:
        for line in lines:
            if self.matches(line):
                return line
        return None


def compile_pattern(text: str, engine: str) -> LinePattern:
    """Compile a content pattern; raises ValueError with a readable reason."""
    minterms: list[Minterm] = []
    for raw in text.split(" && "):
        negated = raw.startswith("!")
        term = raw[1:] if negated else raw
        low = term[:2].lower()
        if low == "r:":
            minterms.append(Minterm(negated, "r", _compile(term[2:], engine)))
        elif low == "n:":
            m = _COMPARE.match(term[2:])
            if m is None:
                raise ValueError(
                    f"numeric rule {term!r} needs 'REGEX compare OP NUMBER' (OP: < <= == != >= >)"
                )
            regex = _compile(m.group("regex"), engine)
            if regex.groups < 1:
                raise ValueError(f"numeric rule {term!r} has no capture group for the number")
            minterms.append(Minterm(negated, "n", regex, op=m.group("op"), value=int(m.group("value"))))
        else:
            minterms.append(Minterm(negated, "literal", None, literal=term))
    return LinePattern(text, tuple(minterms))


def _compile(regex: str, engine: str) -> re.Pattern[str]:
    try:
        return compile_pcre2(regex) if engine == "pcre2" else compile_osregex(regex)
    except (OsRegexError, re.error) as exc:
        raise ValueError(f"invalid regex {regex!r}: {exc}") from exc


def _neg(value: bool | None, negated: bool) -> bool | None:
    return value if value is None or not negated else not value


@dataclass(frozen=True)
class ScaRule:
    text: str
    kind: str
    negated: bool
    location: str
    pattern: LinePattern | None = None
    name_pattern: str | None = None  # d: rules, the entry-name part (``r:REGEX`` or OS_Match)
    process: LinePattern | None = None

    def evaluate(self, host: HostView) -> Outcome:
        if self.kind == "f":
            value, why = self._files(host)
        elif self.kind == "c":
            value, why = self._command(host)
        elif self.kind == "d":
            value, why = self._dirs(host)
        elif self.kind == "p":
            value, why = self._process(host)
        else:
            value, why = None, "Windows registry rules do not apply on Linux"
        value = _neg(value, self.negated)
        return Outcome(value, f"{self.text!r}: {why}")

    # f:
    def _files(self, host: HostView) -> tuple[bool | None, str]:
        files = [f.strip() for f in self.location.split(",") if f.strip()]
        invalid = ""
        for name in files:
            real = host.path(name)
            st = host.stat(real)
            if self.pattern is None:
                if st is None:
                    continue
                if stat.S_ISREG(st.st_mode):
                    return True, f"{name} exists"
                invalid = invalid or f"{name} is not a regular file"
                continue
            if st is None or not stat.S_ISREG(st.st_mode):
                invalid = invalid or f"{name} does not exist or is not a regular file"
                continue
            try:
                lines = host.read_lines(real)
            except OSError as exc:
                invalid = invalid or f"cannot read {name}: {exc.strerror or exc}"
                continue
            hit = self.pattern.first_match(lines)
            if hit is not None:
                return True, f"{name} has the line {hit.strip()[:200]!r}"
        if invalid:
            return None, invalid
        if self.pattern is None:
            return False, "no such file"
        return False, "no line matches"

    # c:
    def _command(self, host: HostView) -> tuple[bool | None, str]:
        if self.pattern is None:
            return True, "command rule without a pattern"
        try:
            argv = tuple(shlex.split(self.location))
        except ValueError as exc:
            return None, f"cannot parse the command: {exc}"
        out = host.run(argv)
        if out.error:
            return None, f"command {self.location!r}: {out.error}"
        hit = self.pattern.first_match(out.stdout.splitlines())
        if hit is not None:
            return True, f"output has the line {hit.strip()[:200]!r}"
        return False, "no output line matches"

    # d:
    def _dirs(self, host: HostView) -> tuple[bool | None, str]:
        dirs = [d.strip() for d in self.location.split(",") if d.strip()]
        invalid = ""
        for name in dirs:
            real = host.resolve(host.path(name)) or host.path(name)
            if self.name_pattern is None:
                if real.is_dir():
                    return True, f"directory {name} exists"
                if real.exists():
                    invalid = invalid or f"{name} is not a directory"
                continue
            if not real.is_dir():
                invalid = invalid or f"cannot open directory {name}"
                continue
            value, why = self._walk(host, real, 0)
            if value:
                return True, why
            if value is None:
                invalid = invalid or why
        if invalid:
            return None, invalid
        return False, "no directory entry matches" if self.name_pattern else "no such directory"

    def _walk(self, host: HostView, directory: Path, depth: int) -> tuple[bool | None, str]:
        assert self.name_pattern is not None
        if depth > 32:
            return None, f"directory tree under {host.display(directory)} is too deep"
        name_re = (
            compile_osregex(self.name_pattern[2:])
            if self.name_pattern[:2].lower() == "r:"
            else compile_osmatch(self.name_pattern)
        )
        invalid = ""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            return None, f"cannot list {host.display(directory)}: {exc.strerror or exc}"
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                invalid = invalid or f"cannot check {host.display(Path(entry.path))}"
                continue
            if is_dir:
                value, why = self._walk(host, Path(entry.path), depth + 1)
            elif name_re.search(entry.name):
                value, why = self._entry(host, Path(entry.path))
            else:
                continue
            if value:
                return True, why
            if value is None:
                invalid = invalid or why
        return (None, invalid) if invalid else (False, "no entry matches")

    def _entry(self, host: HostView, real: Path) -> tuple[bool | None, str]:
        shown = host.display(real)
        if self.pattern is None:
            return (True, f"{shown} exists") if real.is_file() else (False, f"{shown} is not a file")
        try:
            lines = host.read_lines(real)
        except OSError as exc:
            return None, f"cannot read {shown}: {exc.strerror or exc}"
        hit = self.pattern.first_match(lines)
        if hit is not None:
            return True, f"{shown} has the line {hit.strip()[:200]!r}"
        return False, f"no line of {shown} matches"

    # p:
    def _process(self, host: HostView) -> tuple[bool | None, str]:
        assert self.process is not None
        for proc in host.processes():
            candidates = [proc.name]
            if proc.argv:
                candidates += [proc.argv[0], os.path.basename(proc.argv[0])]
            if any(self.process.matches(c) for c in candidates):
                return True, f"process {proc.name} (pid {proc.pid}) is running"
        return False, "no such process is running"


# ---- parsing ------------------------------------------------------------------------------------


def parse_rule(text: str, variables: dict[str, str], engine: str) -> ScaRule:
    """Compile one rule string; raises ValueError with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a rule must be a non-empty string")
    m = _RULE_HEAD.match(text.strip())
    if m is None:
        raise ValueError(f"invalid rule {text!r}: expected TYPE:LOCATION with TYPE one of f, d, p, c, r")
    kind = m.group("type").lower()
    if kind not in "fdpcr":
        raise ValueError(f"invalid rule {text!r}: unknown rule type {m.group('type')!r}")
    negated = m.group("neg") is not None
    location, _, rest = m.group("rest").partition(ARROW)
    for name in sorted(variables, key=len, reverse=True):
        location = location.replace(name, variables[name])
    if "$" in location and kind in "fd" and re.search(r"\$\w", location):
        raise ValueError(f"rule {text!r} uses an undefined variable")
    if not location.strip():
        raise ValueError(f"rule {text!r} has no location")
    if kind == "p":
        if rest:
            raise ValueError(f"process rule {text!r} only checks existence (no '->')")
        return ScaRule(text, kind, negated, location, process=compile_pattern(location, engine))
    if kind == "d" and rest:
        name_part, _, content = rest.partition(ARROW)
        if name_part[:2].lower() == "r:":
            _compile(name_part[2:], "osregex")
        return ScaRule(
            text,
            kind,
            negated,
            location,
            pattern=compile_pattern(content, engine) if content else None,
            name_pattern=name_part,
        )
    return ScaRule(text, kind, negated, location, pattern=compile_pattern(rest, engine) if rest else None)


def _condition(value: Any, path: tuple[str | int, ...]) -> Condition:
    cond = _LEGACY_CONDITIONS.get(str(value), value)
    if cond not in CONDITIONS:
        raise ScaSyntaxError(f"condition must be one of all, any, none (got {value!r})", path)
    return cond


def _rules(raw: Any, path: tuple[str | int, ...], variables: dict[str, str], engine: str) -> tuple[Rule, ...]:
    if not isinstance(raw, list) or not raw:
        raise ScaSyntaxError("rules must be a non-empty list of strings", path)
    out: list[Rule] = []
    for i, text in enumerate(raw):
        try:
            out.append(parse_rule(text, variables, engine))
        except ValueError as exc:
            raise ScaSyntaxError(str(exc), (*path, i)) from exc
    return tuple(out)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def parse_sca(doc: Any, file: str) -> Policy:
    """Build a Policy from a parsed SCA document; raises ScaSyntaxError naming the offending value."""
    if not isinstance(doc, dict):
        raise ScaSyntaxError("an SCA policy is a mapping with 'policy' and 'checks'", ())
    policy = doc.get("policy")
    if not isinstance(policy, dict) or not policy.get("id") or not policy.get("name"):
        raise ScaSyntaxError("'policy' must be a mapping with at least 'id' and 'name'", ("policy",))
    engine = str(policy.get("regex_type", "osregex")).lower()
    raw_vars = doc.get("variables") or {}
    if not isinstance(raw_vars, dict):
        raise ScaSyntaxError("'variables' must be a mapping of $name: value", ("variables",))
    variables: dict[str, str] = {}
    for key, value in raw_vars.items():
        if not str(key).startswith("$"):
            raise ScaSyntaxError(
                f"invalid variable name {key!r} (must start with $)", ("variables", str(key))
            )
        variables[str(key)] = ",".join(map(str, value)) if isinstance(value, list) else _text(value)

    requirements = None
    req = doc.get("requirements")
    if req is not None:
        if not isinstance(req, dict):
            raise ScaSyntaxError("'requirements' must be a mapping", ("requirements",))
        requirements = Requirements(
            description=_text(req.get("description") or req.get("title")),
            condition=_condition(req.get("condition"), ("requirements", "condition")),
            rules=_rules(req.get("rules"), ("requirements", "rules"), variables, engine),
        )

    checks_raw = doc.get("checks")
    if not isinstance(checks_raw, list) or not checks_raw:
        raise ScaSyntaxError("'checks' must be a non-empty list", ("checks",))
    checks: list[Check] = []
    seen: set[str] = set()
    for i, raw in enumerate(checks_raw):
        path: tuple[str | int, ...] = ("checks", i)
        if not isinstance(raw, dict):
            raise ScaSyntaxError("a check must be a mapping", path)
        cid = raw.get("id")
        if not isinstance(cid, int) or isinstance(cid, bool) or cid <= 0:
            raise ScaSyntaxError(f"check id must be a positive integer (got {cid!r})", (*path, "id"))
        if str(cid) in seen:
            raise ScaSyntaxError(f"duplicate check id {cid}", (*path, "id"))
        seen.add(str(cid))
        if not isinstance(raw.get("title"), str) or not raw["title"].strip():
            raise ScaSyntaxError(f"check {cid} has no title", path)
        check_engine = str(raw.get("regex_type", engine)).lower()
        compliance: dict[str, list[str]] = {}
        for item in raw.get("compliance") or []:
            if isinstance(item, dict):
                for k, v in item.items():
                    compliance[str(k)] = [str(x) for x in (v if isinstance(v, list) else [v])]
        checks.append(
            Check(
                id=str(cid),
                title=raw["title"].strip(),
                condition=_condition(raw.get("condition"), (*path, "condition")),
                rules=_rules(raw.get("rules"), (*path, "rules"), variables, check_engine),
                description=_text(raw.get("description")).strip(),
                rationale=_text(raw.get("rationale")).strip(),
                remediation=_text(raw.get("remediation")).strip(),
                references=tuple(str(r) for r in raw.get("references") or []),
                compliance=compliance,
            )
        )
    return Policy(
        id=str(policy["id"]),
        name=str(policy["name"]),
        file=file,
        syntax="sca",
        checks=tuple(checks),
        description=_text(policy.get("description")).strip(),
        requirements=requirements,
    )


def position(marks: Marks, exc: ScaSyntaxError) -> tuple[int | None, int | None]:
    return marks.at(exc.path)
