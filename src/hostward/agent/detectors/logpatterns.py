"""Login log patterns as data: load and validate ``content/logpatterns/*.yaml`` (schema in its README).

Validation happens once, at load: a bad file stops the load with a ``PatternError`` naming the file, the
pattern id and the reason, so a broken pattern can never silently match nothing at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

import hostward

KINDS = ("failure", "success", "other")
COUNTINGS = ("attempt", "connection", "followup")
SERVICES = ("sshd", "vsftpd", "proftpd", "pure-ftpd", "mysql", "dropbear", "pam")
GROUPS = frozenset({"user", "address", "port", "method", "alt_user"})
ANY_PROGRAM = "*"

_GROUP_NAME = re.compile(r"\(\?P<([A-Za-z_]\w*)>")


class PatternError(ValueError):
    """A pattern file is invalid; the message names the file, the pattern and the reason."""


@dataclass(frozen=True)
class Sample:
    line: str
    expect: dict[str, Any]
    hint: str | None = None


@dataclass(frozen=True)
class PatternSpec:
    """One pattern: what a matching message means. ``service`` is the one its events count against
    (the file's, unless the pattern names another: PAM's sshd lines count for sshd)."""

    id: str
    service: str
    kind: str
    counting: str  # "" for success / other
    regex: str
    method: str | None = None
    user: str | None = None
    samples: tuple[Sample, ...] = ()
    negative: tuple[str, ...] = ()

    @property
    def special(self) -> bool:
        """Needs more than copying its groups into an event: a default user or method, a fallback user."""
        return self.user is not None or self.method is not None or "(?P<alt_user>" in self.regex


@dataclass(frozen=True)
class LineFormat:
    """A service's own log-file line layout: where its timestamp and its message are."""

    id: str
    service: str
    regex: re.Pattern[str]
    time_format: str  # strptime format, or "iso"


@dataclass(frozen=True)
class ServiceSpec:
    service: str
    path: Path
    description: str = ""
    programs: tuple[str, ...] = ()
    bare: bool = False
    formats: tuple[LineFormat, ...] = ()
    patterns: tuple[PatternSpec, ...] = ()


@dataclass(frozen=True)
class PatternSet:
    """Every service's patterns, in file order (sshd first, then pam, then the rest by name)."""

    services: dict[str, ServiceSpec] = field(default_factory=dict)

    def patterns(self) -> list[PatternSpec]:
        return [p for s in self.services.values() for p in s.patterns]

    def by_id(self, pattern_id: str) -> PatternSpec:
        for pattern in self.patterns():
            if pattern.id == pattern_id:
                return pattern
        raise KeyError(pattern_id)


def default_directory() -> Path:
    return Path(hostward.__file__).resolve().parent / "content" / "logpatterns"


@lru_cache(maxsize=4)
def _load_cached(directory: Path) -> PatternSet:
    return _load(directory)


def load_patterns(directory: Path | None = None) -> PatternSet:
    """Load and validate every ``*.yaml`` in ``directory`` (default: the shipped content); cached."""
    return _load_cached((directory or default_directory()).resolve())


def _file_order(path: Path) -> tuple[int, str]:
    # sshd first (the hot path), pam next (its patterns are appended to every program's), then by name.
    rank = {"sshd": 0, "pam": 1}.get(path.stem, 2)
    return rank, path.name


def _load(directory: Path) -> PatternSet:
    files = sorted(directory.glob("*.yaml"), key=_file_order)
    if not files:
        raise PatternError(f"{directory}: no pattern files (*.yaml)")
    services: dict[str, ServiceSpec] = {}
    seen_ids: dict[str, Path] = {}
    for path in files:
        spec = _load_file(path)
        if spec.service in services:
            raise PatternError(
                f"{path}: service {spec.service!r} already defined in {services[spec.service].path}"
            )
        for pattern in spec.patterns:
            if pattern.id in seen_ids:
                raise PatternError(
                    f"{path}: pattern id {pattern.id!r} already used in {seen_ids[pattern.id]}"
                )
            seen_ids[pattern.id] = path
        services[spec.service] = spec
    return PatternSet(services=services)


def _load_file(path: Path) -> ServiceSpec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PatternError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise PatternError(f"{path}: expected a mapping at the top level")
    service = data.get("service")
    if service not in SERVICES:
        raise PatternError(f"{path}: service must be one of {', '.join(SERVICES)}, got {service!r}")
    programs = tuple(str(p) for p in data.get("programs") or ())
    formats = tuple(_load_format(path, service, i, f) for i, f in enumerate(data.get("formats") or ()))
    raw_patterns = data.get("patterns")
    if not isinstance(raw_patterns, list) or not raw_patterns:
        raise PatternError(f"{path}: 'patterns' must be a non-empty list")
    patterns = tuple(_load_pattern(path, service, i, p) for i, p in enumerate(raw_patterns))
    unknown = set(data) - {"service", "description", "programs", "bare", "formats", "patterns"}
    if unknown:
        raise PatternError(f"{path}: unknown keys {sorted(unknown)}")
    return ServiceSpec(
        service=service,
        path=path,
        description=str(data.get("description") or ""),
        programs=programs,
        bare=bool(data.get("bare", False)),
        formats=formats,
        patterns=patterns,
    )


def _load_format(path: Path, service: str, index: int, raw: Any) -> LineFormat:
    where = f"{path}: formats[{index}]"
    if not isinstance(raw, dict) or not raw.get("id") or not raw.get("regex") or not raw.get("time_format"):
        raise PatternError(f"{where}: needs id, regex and time_format")
    try:
        rx = re.compile(str(raw["regex"]))
    except re.error as exc:
        raise PatternError(f"{where} ({raw['id']}): bad regex: {exc}") from exc
    if set(rx.groupindex) != {"ts", "msg"}:
        raise PatternError(f"{where} ({raw['id']}): regex needs exactly the named groups ts and msg")
    return LineFormat(id=str(raw["id"]), service=service, regex=rx, time_format=str(raw["time_format"]))


def _load_pattern(path: Path, service: str, index: int, raw: Any) -> PatternSpec:
    if not isinstance(raw, dict):
        raise PatternError(f"{path}: patterns[{index}] must be a mapping")
    pid = raw.get("id")
    where = f"{path}: pattern {pid or f'#{index}'}"
    if not isinstance(pid, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", pid):
        raise PatternError(f"{where}: id must be lower-case letters, digits and dashes")
    unknown = set(raw) - {
        "id",
        "kind",
        "counting",
        "regex",
        "method",
        "user",
        "service",
        "samples",
        "negative",
    }
    if unknown:
        raise PatternError(f"{where}: unknown keys {sorted(unknown)}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise PatternError(f"{where}: kind must be one of {', '.join(KINDS)}")
    counting = raw.get("counting") or ""
    if kind == "failure" and counting not in COUNTINGS:
        raise PatternError(f"{where}: a failure needs counting: {' | '.join(COUNTINGS)}")
    if kind != "failure" and counting:
        raise PatternError(f"{where}: counting applies to failures only")
    regex = raw.get("regex")
    if not isinstance(regex, str) or not regex:
        raise PatternError(f"{where}: regex missing")
    if regex.startswith("^"):
        raise PatternError(f"{where}: regex must not start with ^ (it is matched at the message start)")
    try:
        compiled = re.compile(regex)
    except re.error as exc:
        raise PatternError(f"{where}: bad regex: {exc}") from exc
    bad_groups = set(compiled.groupindex) - GROUPS
    if bad_groups:
        raise PatternError(f"{where}: unknown named groups {sorted(bad_groups)}; allowed: {sorted(GROUPS)}")
    if compiled.groups != len(compiled.groupindex):
        raise PatternError(f"{where}: use (?:...) for unnamed groups")
    if "(?P=" in regex:
        raise PatternError(f"{where}: back-references are not supported")
    try:
        rewritten = re.compile(branch_optionals(single_line_regex(regex)))
    except (ValueError, re.error) as exc:
        raise PatternError(f"{where}: {exc}") from exc
    if rewritten.groupindex != compiled.groupindex:
        raise PatternError(f"{where}: the regex cannot be rewritten for the chunk parser")
    samples = tuple(_load_sample(where, i, s) for i, s in enumerate(raw.get("samples") or ()))
    negative = raw.get("negative") or []
    if not isinstance(negative, list) or not all(isinstance(n, str) for n in negative):
        raise PatternError(f"{where}: negative must be a list of lines")
    own_service = raw.get("service", service)
    if own_service not in SERVICES:
        raise PatternError(f"{where}: service must be one of {', '.join(SERVICES)}")
    return PatternSpec(
        id=pid,
        service=own_service,
        kind=kind,
        counting=counting,
        regex=regex,
        method=raw.get("method"),
        user=raw.get("user"),
        samples=samples,
        negative=tuple(negative),
    )


def _load_sample(where: str, index: int, raw: Any) -> Sample:
    if (
        not isinstance(raw, dict)
        or not isinstance(raw.get("line"), str)
        or not isinstance(raw.get("expect"), dict)
    ):
        raise PatternError(f"{where}: samples[{index}] needs line and expect")
    hint = raw.get("hint")
    return Sample(line=raw["line"], expect=dict(raw["expect"]), hint=str(hint) if hint else None)


_NEWLINE_ESCAPES = ("\\n", "\\x", "\\u", "\\U", "\\N", "\\0", "\\r")
_OUTSIDE_CLASS = {"\\s": r"[^\S\n]", "\\W": r"[^\w\n]", "\\D": r"[^\d\n]"}
_DOTALL = re.compile(r"\(\?[aiLmux]*s")


def single_line_regex(regex: str) -> str:
    """``regex`` rewritten so that no part of it can match a newline, with the same meaning on a line.

    The parser runs the patterns over a whole chunk of lines at once (``re.MULTILINE``), where ``\\s``,
    ``\\W``, ``\\D`` and negated classes such as ``[^"]`` would otherwise run on into the next line.
    ``ValueError`` for what cannot be made line-bound: an explicit newline or DOTALL.
    """
    if _DOTALL.search(regex):
        raise ValueError("the s (DOTALL) flag is not allowed: a pattern matches within one line")
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        ch = regex[i]
        if ch == "\\":
            esc = regex[i : i + 2]
            if esc in _NEWLINE_ESCAPES:
                raise ValueError(f"{esc} is not allowed: a pattern matches within one line")
            out.append(_OUTSIDE_CLASS.get(esc, esc))
            i += 2
        elif ch == "[":
            j = i + 1
            negated = regex.startswith("^", j)
            j += negated
            if regex.startswith("]", j):
                j += 1  # a ] right after [ or [^ is a literal
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            if j >= n:
                raise ValueError("unterminated character class")
            body = regex[i + 1 + negated : j]
            if any(e in body for e in _NEWLINE_ESCAPES):
                raise ValueError("a newline in a character class is not allowed")
            if negated:
                out.append("[^" + body + "\\n]")
            elif any(e in body for e in ("\\s", "\\W", "\\D")) or re.search(r"[^\\]-.", body):
                out.append("(?:(?!\\n)[" + body + "])")
            else:
                out.append("[" + body + "]")
            i = j + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _group_end(regex: str, start: int) -> int:
    """Index of the ``)`` that closes the group opened at ``regex[start]``."""
    depth, i, n = 0, start, len(regex)
    while i < n:
        ch = regex[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i += 1
            i += regex.startswith("^", i)
            i += regex.startswith("]", i)
            while i < n and regex[i] != "]":
                i += 2 if regex[i] == "\\" else 1
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError("unbalanced parentheses")


def branch_optionals(regex: str) -> str:
    """``regex`` with every optional group ``(X)?`` written as the alternation ``(?:(X)|)`` (``(?:|(X))``
    for the lazy ``??``); the same matches, the same groups, a cheaper program for Python's engine."""
    out: list[str] = []
    i, n = 0, len(regex)
    while i < n:
        ch = regex[i]
        if ch == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if ch == "[":
            j = i + 1
            j += regex.startswith("^", j)
            j += regex.startswith("]", j)
            while j < n and regex[j] != "]":
                j += 2 if regex[j] == "\\" else 1
            out.append(regex[i : j + 1])
            i = j + 1
            continue
        if regex.startswith("(?#", i):  # a comment: up to the first ")"
            end = regex.find(")", i)
            end = n - 1 if end < 0 else end
            out.append(regex[i : end + 1])
            i = end + 1
            continue
        if ch != "(" or regex.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            out.append(ch)
            i += 1
            continue
        end = _group_end(regex, i)
        head = regex.index(">", i) + 1 if regex.startswith("(?P<", i) else i + 1
        head = i + 3 if regex.startswith("(?:", i) else head
        inner = branch_optionals(regex[head:end])
        quantifier = regex[end + 1 : end + 3]
        if not quantifier.startswith("?") or quantifier == "?+":
            out.append(regex[i:head] + inner + ")")  # not optional (or possessive): only the inside
            i = end + 1
            continue
        group = inner if regex.startswith("(?:", i) else regex[i:head] + inner + ")"
        lazy = quantifier == "??"
        out.append(f"(?:|{group})" if lazy else f"(?:{group}|)")
        i = end + 2 + lazy
    return "".join(out)


def prefixed_regex(pattern: PatternSpec, prefix: str) -> str:
    """``pattern.regex`` with every named group renamed ``<prefix><name>`` (to combine alternatives)."""
    return _GROUP_NAME.sub(lambda m: f"(?P<{prefix}{m.group(1)}>", pattern.regex)
