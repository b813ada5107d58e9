"""Wazuh/OSSEC regular expressions translated to Python ``re``: OS_Regex (``r:``) and OS_Match (sregex).

OS_Regex (case-insensitive): ``\\w`` = ``[A-Za-z0-9@_-]``, ``\\d``, ``\\s`` (a space only), ``\\t``,
``\\p`` (punctuation), ``\\W \\D \\S`` their complements, ``\\.`` any character; ``+`` / ``*`` only after
a backslash class; ``^`` / ``$`` anchors; ``|`` alternation of whole patterns; ``(`` ``)`` groups; a bare
``.`` is a literal dot; ``\\$ \\( \\) \\\\ \\| \\<`` are literals. Every other character is literal.
OS_Regex does not backtrack (``\\p*:`` cannot match ``:``); Python does, so a translated pattern can only
match more lines than Wazuh would, never fewer.

OS_Match (case-insensitive substring match) supports ``^``, ``$`` and ``|``.
"""

from __future__ import annotations

import re
from functools import lru_cache

_PUNCT = r"""()*+,\-.:;<=>?\[\]!"'#$%&|{}"""
_CLASSES = {
    "w": r"[A-Za-z0-9@_\-]",
    "W": r"[^A-Za-z0-9@_\-]",
    "d": r"[0-9]",
    "D": r"[^0-9]",
    "s": " ",
    "S": "[^ ]",
    "t": r"\t",
    "p": f"[{_PUNCT}]",
    ".": ".",
}


class OsRegexError(ValueError):
    """The pattern is not a valid OS_Regex (unbalanced group, trailing backslash)."""


def _split_alternatives(pattern: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            current.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "|":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


def _translate_one(alt: str) -> str:
    out: list[str] = []
    i = 0
    depth = 0
    if alt.startswith("^"):
        out.append("^")
        i = 1
    n = len(alt)
    while i < n:
        c = alt[i]
        if c == "\\":
            if i + 1 >= n:
                raise OsRegexError("trailing backslash")
            e = alt[i + 1]
            i += 2
            if e in _CLASSES:
                atom = _CLASSES[e]
                if i < n and alt[i] in "*+":
                    atom += alt[i]
                    i += 1
                out.append(atom)
            else:
                out.append(re.escape(e))
            continue
        if c == "$" and i == n - 1:
            out.append("$")
        elif c == "(":
            depth += 1
            out.append("(")
        elif c == ")":
            if depth == 0:
                raise OsRegexError("unbalanced ')'")
            depth -= 1
            out.append(")")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise OsRegexError("unbalanced '('")
    return "".join(out)


def translate_osregex(pattern: str) -> str:
    """The Python regex (without flags) equivalent to an OS_Regex pattern."""
    return "|".join(f"(?:{_translate_one(alt)})" for alt in _split_alternatives(pattern))


@lru_cache(maxsize=4096)
def compile_osregex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(translate_osregex(pattern), re.IGNORECASE)
    except re.error as exc:  # pragma: no cover - translation only emits valid syntax
        raise OsRegexError(str(exc)) from exc


@lru_cache(maxsize=4096)
def compile_osmatch(pattern: str) -> re.Pattern[str]:
    """OS_Match: literal substrings with ``^`` / ``$`` anchors, ``|`` alternatives, case-insensitive."""
    alts = []
    for alt in pattern.split("|"):
        head = "^" if alt.startswith("^") else ""
        body = alt[1:] if head else alt
        tail = "$" if body.endswith("$") else ""
        if tail:
            body = body[:-1]
        alts.append(f"(?:{head}{re.escape(body)}{tail})")
    return re.compile("|".join(alts), re.IGNORECASE)


@lru_cache(maxsize=4096)
def compile_pcre2(pattern: str) -> re.Pattern[str]:
    """PCRE2 patterns (``regex_type: pcre2``): Python's syntax is close enough for policy patterns."""
    return re.compile(pattern)
