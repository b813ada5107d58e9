"""Fast login-log parser: chunks of log text in, event rows out (journald messages: see ``logline``).

Speed comes from doing little in Python per line. The patterns are compiled into ONE multi-line regex
for whole syslog lines (``logcompile``), and ``finditer`` runs it over a whole chunk of text — what one
read of the log gave — so there is no per-line split, decode or call: the regex engine walks from one
line to the next, rejects a non-matching alternative after one character comparison and ends on a line
of a program we do not watch right after its tag. Every line is matched exactly once, so the counters
stay exact. The alternative that matched (``match.lastindex``) says what the line means; its groups go
into a plain tuple in ``LoginEvent``'s layout (see ``logevents`` for why not a ``LoginEvent``), with
timestamps and addresses converted through small caches, because attackers repeat themselves.

Lines the chunk regex does not take (no syslog header, a service's own log format, bare ``sshd -E``
messages, patterns with defaults) go the reference path (``LineParser.parse_one``), which gives the
same event for a line; the test suite checks it.

When the C accelerator ``_logscan`` is built (``hostward.native``) it runs the chunk regex, rewritten
for PCRE2 by ``scanner_regex``, with PCRE2's JIT and builds the same rows through the same caches and
callbacks; ``_parse_chunk`` is its pure-Python twin and takes every chunk the accelerator declines
(non-ASCII text, a PCRE2 limit). ``HOSTWARD_NO_NATIVE=1`` forces the pure path.

Pure logic, no I/O: bytes are decoded by the collector. A line that is garbage, binary, over
``max_line`` characters or cut short never raises — it is counted.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Iterable
from typing import Any, NamedTuple

from hostward import native
from hostward.agent.detectors.logcompile import (
    SKIPPED,
    UNMATCHED,
    CompiledPatterns,
    default_compiled,
)
from hostward.agent.detectors.logevents import (
    LoginEvent,
    LoginRow,
    ParseCounters,
    as_event,
    normalise_address,
)
from hostward.agent.detectors.logline import AUTO, DEFAULT_MAX_LINE, LineParser
from hostward.agent.detectors.logtime import SECONDS

__all__ = [
    "AUTO",
    "DEFAULT_MAX_LINE",
    "CompiledPatterns",
    "LogParser",
    "LoginEvent",
    "LoginRow",
    "ParseCounters",
    "as_event",
    "default_compiled",
    "normalise_address",
]

_MISS = object()
_TRAILING_CR = re.compile(r"\r+(?=\n|\Z)")
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


class LogParser(LineParser):
    """Turns the lines of one log source into event rows and counts what it saw.

    ``parse_text`` is the agent's path (one call per read of a log); ``parse_numbered`` the same with
    line numbers (``hostward logtest``); ``parse_line`` / ``parse_many`` take separate lines.
    """

    def __init__(self, compiled: CompiledPatterns | None = None, **options: Any) -> None:
        super().__init__(compiled, **options)
        self._chunk = self._c.chunk_regex()
        self._scanner = native_scanner(self._c)

    @property
    def native(self) -> bool:
        """True when chunks go through the C accelerator (those it declines still take the pure path)."""
        return self._scanner is not None

    def parse_text(self, text: str) -> list[LoginRow]:
        """The events of a chunk of whole lines (each ends with a newline, the last one may not), in
        order. The hot path: the agent hands over what one read of a log gave."""
        out: list[LoginRow] = []
        for run, _ in self._runs(text):
            self._parse_run(run, out, None)
        return out

    def parse_numbered(self, text: str) -> list[tuple[int, LoginRow]]:
        """``parse_text`` with the 1-based number (within ``text``) of each event's line."""
        numbered: list[tuple[int, LoginRow]] = []
        for run, first in self._runs(text):
            rows: list[LoginRow] = []
            starts: list[int] = []
            self._parse_run(run, rows, starts)
            line, pos = first + 1, 0
            for start, row in zip(starts, rows, strict=True):
                line += run.count("\n", pos, start)
                pos = start
                numbered.append((line, row))
        return numbered

    def parse_many(self, lines: Iterable[str]) -> list[LoginRow]:
        """The events of ``lines`` (each one line, with or without its line ending), in order."""
        batch = lines if isinstance(lines, list) else list(lines)
        if not batch:
            return []
        text = "\n".join(batch) + "\n"  # every line ends with its newline: an empty last line counts
        if text.count("\n") == len(batch):
            return self.parse_text(text)
        # some lines bring their own newline: join them as they are, but a line with a newline inside
        # is one line for the caller, so it goes the reference path whole
        out: list[LoginRow] = []
        run: list[str] = []
        for line in batch:
            if "\n" not in line.rstrip("\r\n"):
                run.append(line.rstrip("\r\n"))
                continue
            out += self.parse_text("\n".join(run) + "\n") if run else []
            run = []
            event = self.parse_one(line)
            if event is not None:
                out.append(event)
        if run:
            out += self.parse_text("\n".join(run) + "\n")
        return out

    def parse_line(self, line: str) -> LoginEvent | None:
        """The event of one log line, or None."""
        events = self.parse_many((line,))
        return as_event(events[0]) if events else None

    # ---- internals ---------------------------------------------------------------------------------

    def _runs(self, text: str) -> list[tuple[str, int]]:
        """``text`` as runs of lines the chunk regex can take — CR endings gone, no line over
        ``max_line`` (those are counted here) — each with the index of its first line in ``text``."""
        if not text:
            return []
        if "\r" in text:
            # CRLF (or CR) endings: the reference path strips them per line; do it for the chunk at once
            text = _TRAILING_CR.sub("", text)
        if not self._may_hold_long_line(text):
            return [(text, 0)]
        runs: list[tuple[str, int]] = []
        run: list[str] = []
        first = 0
        lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
        for index, line in enumerate(lines):
            if len(line) <= self._max_line:
                if not run:
                    first = index
                run.append(line)
                continue
            if run:
                runs.append(("\n".join(run) + "\n", first))
                run = []
            self._too_long()
        if run:
            runs.append(("\n".join(run) + "\n", first))
        return runs

    def _may_hold_long_line(self, text: str) -> bool:
        """False when no line of ``text`` is longer than ``max_line``, found without a step per line: a
        line that long holds a whole aligned window of ``max_line // 2`` characters without a newline."""
        width = max(self._max_line // 2, 1)
        if len(text) <= self._max_line:
            return False
        find = text.find
        return any(find("\n", k, k + width) < 0 for k in range(0, len(text) - width + 1, width))

    def _parse_run(self, text: str, out: list[LoginRow], starts: list[int] | None) -> None:
        """``_parse_chunk`` through the C accelerator when there is one and it takes ``text``."""
        scanner = self._scanner
        if scanner is not None:
            time = self._time
            counts = scanner.scan(
                text, out, starts, self._addr_cache, time.minute_cache, time.bsd, time.iso, self.parse_one
            )
            if counts is not None:
                events, _, skipped, unmatched = counts
                self._events += events
                self._skipped += skipped
                self._unmatched += unmatched
                return
        self._parse_chunk(text, out, starts)

    def _parse_chunk(self, text: str, out: list[LoginRow], starts: list[int] | None) -> None:
        """Append the events of a run (no CR, no line over ``max_line``) to ``out`` (and, when given,
        where each event's line starts to ``starts``): the hot loop."""
        rx, alts = self._chunk
        end = len(text) - 1 if text.endswith("\n") else len(text)
        append = out.append
        addresses = self._addr_cache
        minute_get = self._time.minute_cache.get
        second_get = SECONDS.get
        miss = _MISS
        before = len(out)
        slow = skipped = unmatched = 0
        last_stamp, last_ts = "", None  # consecutive syslog lines mostly share their second
        for m in rx.finditer(text, 0, end):
            entry: Any = alts[m.lastindex]  # type: ignore[index]
            if entry.__class__ is str:
                if entry is SKIPPED:
                    skipped += 1
                elif entry is UNMATCHED:
                    unmatched += 1
                else:  # no syslog line, or a special pattern: the reference path decides
                    event = self.parse_one(m.group())  # counts the event itself
                    if event is not None:
                        append(event)
                        slow += 1
                        if starts is not None:
                            starts.append(m.start())
                continue
            kind, service, pattern_id, counting, groups = entry
            user, addr, port, method, stamp = m.group(*groups)
            if stamp == last_stamp:
                ts = last_ts
            elif stamp[3] == " ":  # "Mmm dd hh:mm:ss", as the regex took it
                base: Any = minute_get(stamp[:12], miss)
                sec = second_get(stamp[13:15])
                if base is miss or sec is None:
                    ts = self._time.bsd(stamp)
                else:
                    ts = None if base is None else base + sec
                last_stamp, last_ts = stamp, ts
            else:
                ts = self._time.iso(stamp)
                last_stamp, last_ts = stamp, ts
            try:
                number = None if port is None else int(port)  # int() beats a dict of 64k ports
            except ValueError:
                number = None  # thousands of digits: no port
            # addresses: a dict that fills a missing key itself (normalised, invalid ones counted)
            append((kind, service, user, addresses[addr], method, ts, pattern_id, number, counting))
            if starts is not None:
                starts.append(m.start())
        self._events += len(out) - before - slow
        self._skipped += skipped
        self._unmatched += unmatched
