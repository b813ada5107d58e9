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
from collections.abc import Iterable
from typing import Any

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
from hostward.agent.detectors.logscanner import native_scanner
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
