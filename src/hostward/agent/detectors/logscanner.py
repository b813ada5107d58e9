"""The C accelerator of the login-log chunk parser: its regex rewritten for PCRE2, and its scanners.

``_logscan`` (``src/native/logscan.c``) runs ``logcompile``'s chunk regex with PCRE2's JIT and builds
the same rows as ``LogParser._parse_chunk``. PCRE2 needs the regex in its own dialect and cheap to match
(``scanner_regex``), and a table that says what each alternative means in the rewritten group numbers
(``make_scanner``). One scanner serves every parser of a pattern set (``native_scanner``); None means
the pure-Python path: not built, switched off by ``HOSTWARD_NO_NATIVE``, or a regex PCRE2 would not read
exactly as Python does.
"""

from __future__ import annotations

import re
import weakref
from typing import Any, NamedTuple

from hostward import native
from hostward.agent.detectors.logcompile import SKIPPED, UNMATCHED, CompiledPatterns

_NATIVE = "hostward.agent.detectors._logscan"
# Python escapes PCRE2 reads otherwise: \Z is the very end (PCRE2's also matches before a final newline),
# \v a vertical tab (to PCRE2 a class of vertical white space, newline included)
_PCRE2_ESCAPES = {"\\Z": "\\z", "\\v": "\\x0b"}
# one scanner per pattern set (a JIT compile takes milliseconds), shared by its parsers; None: pure path
_scanners: weakref.WeakKeyDictionary[CompiledPatterns, Any] = weakref.WeakKeyDictionary()


class ScannerRegex(NamedTuple):
    """The chunk regex rewritten for the C scanner: PCRE2 text, its capture count, and the PCRE2 group
    number of each Python group the scanner reads."""

    pattern: str
    captures: int
    numbers: dict[str, int]


def scanner_regex(rx: re.Pattern[str], keep: set[str]) -> ScannerRegex | None:
    r"""``rx`` (the chunk regex, Python syntax) as PCRE2 reads it to the same matches, rewritten so that a
    match costs little: or None when it holds something not handled here (the pure path takes over).

    PCRE2's JIT pays for every capture group at every match, and the chunk regex has one per field of
    every pattern. So only the groups named in ``keep`` capture, and every ``(?:`` becomes a branch-reset
    group ``(?|``: the alternatives' groups share numbers, which leaves a handful of groups. Which group
    closed last (Python's ``lastindex``, which says what the line means) is told by a mark ``(*:N)``
    after each named group, N its Python number, inside a wrapper that takes the group's quantifier:
    ``(?P<a>X)*`` becomes ``(?:(X)(*:1))*``; PCRE2 reports the last mark on the matching path. The
    final ``[^\n]*`` goes (the scanner takes the line's end from the text); ``\Z``, ``\v`` and ``{,n}``
    (text to PCRE2 10.42) are written the way PCRE2 reads them as Python does. Refused: unnamed captures,
    numbered escapes, named groups inside lookarounds, conditionals, POSIX classes, the verbose flag.
    """
    pattern = rx.pattern
    if not pattern.endswith("[^\\n]*") or re.search(r"\(\?[a-zA-Z-]*x", pattern):
        return None
    pattern = pattern[: -len("[^\\n]*")]
    out: list[str] = []
    frames: list[list[Any]] = []  # open groups: [kind, base, highest] / [kind, name]
    count = 0
    numbers: dict[str, int] = {}
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            esc = pattern[i : i + 2]
            if esc[1:].isdigit():
                return None  # a back-reference or an octal escape: numbers differ after the rewrite
            out.append(_PCRE2_ESCAPES.get(esc, esc))
            i += 2
        elif ch == "[":
            j = i + 1
            j += pattern.startswith("^", j)
            j += pattern.startswith("]", j)
            out.append(pattern[i:j])
            while j < n and pattern[j] != "]":
                if pattern[j] == "[" and pattern[j + 1 : j + 2] in (":", ".", "="):
                    return None
                esc = pattern[j : j + 2] if pattern[j] == "\\" else pattern[j]
                out.append("\\x0b" if esc == "\\v" else esc)
                j += len(esc)
            out.append("]")
            i = j + 1
        elif pattern.startswith("(?#", i):  # a comment, up to the first ")"
            end = pattern.find(")", i)
            end = n - 1 if end < 0 else end
            out.append(pattern[i : end + 1])
            i = end + 1
        elif pattern.startswith("(?P<", i):
            close = pattern.index(">", i)
            name = pattern[i + 4 : close]
            if any(f[0] == "look" for f in frames):
                return None
            if name in keep:
                count += 1
                numbers[name] = count
            out.append("(?:(" if name in keep else "(?:(?:")
            frames.append(["named", name])
            i = close + 1
        elif pattern.startswith("(?:", i):
            frames.append(["reset", count, count])
            out.append("(?|")
            i += 3
        elif pattern.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            frames.append(["look"])
            out.append(ch)
            i += 1
        elif ch == "(":
            if not pattern.startswith("(?", i) or pattern.startswith(("(?P", "(?("), i):
                return None
            frames.append(["plain"])  # atomic group, flags
            out.append(ch)
            i += 1
        elif ch == "|":
            if frames and frames[-1][0] == "reset":
                frames[-1][2] = max(frames[-1][2], count)
                count = frames[-1][1]
            out.append(ch)
            i += 1
        elif ch == ")":
            frame: list[Any] = frames.pop() if frames else ["plain"]
            if frame[0] == "reset":
                count = max(frame[2], count)
            out.append(f")(*:{rx.groupindex[frame[1]]}))" if frame[0] == "named" else ")")
            i += 1
        elif ch == "{" and (m := re.match(r"\{,(\d+)\}", pattern[i:])) is not None:
            out.append(f"{{0,{m.group(1)}}}")
            i += m.end()
        else:
            out.append(ch)
            i += 1
    if frames:
        return None
    return ScannerRegex("".join(out), count, numbers)


def native_scanner(compiled: CompiledPatterns) -> Any:
    """The C scanner for ``compiled``'s chunk regex, shared by its parsers, or None: not built, switched
    off (``HOSTWARD_NO_NATIVE``), or a regex PCRE2 would not read exactly as Python does."""
    if native.load(_NATIVE) is None:
        return None
    if compiled not in _scanners:
        _scanners[compiled] = make_scanner(compiled)
    return _scanners[compiled]


def make_scanner(compiled: CompiledPatterns, match_limit: int = 0) -> Any:
    """A new C scanner for ``compiled`` (None as for ``native_scanner``); a line that needs more than
    ``match_limit`` PCRE2 steps (0: PCRE2's default) makes it decline its chunk to the pure path."""
    module = native.load(_NATIVE)
    if module is None:
        return None
    rx, alts = compiled.chunk_regex()
    names = {number: name for name, number in rx.groupindex.items()}
    never = rx.groupindex.get("never")
    keep = {names[g] for e in alts if not isinstance(e, str) for g in e[4] if g != never}
    rewritten = scanner_regex(rx, keep)
    if rewritten is None or not rewritten.pattern.isascii():
        return None
    codes = {SKIPPED: module.SKIPPED, UNMATCHED: module.UNMATCHED}
    table = [
        codes.get(e, module.SLOW)
        if isinstance(e, str)
        else (*e[:4], tuple(rewritten.numbers.get(names[g], 0) for g in e[4]))
        for e in alts
    ]
    try:
        return module.Scanner(rewritten.pattern, rewritten.captures, table, match_limit)
    except (ValueError, TypeError):
        return None  # PCRE2 refuses it: the pure path
