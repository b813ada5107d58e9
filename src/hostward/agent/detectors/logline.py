"""The reference path of the login-log parser: one line (or one journald message) at a time.

The syslog header is split with ``str.find`` and the program's own bucket of patterns is tried; lines
without a syslog header try the services' own line formats, then the bare messages (``sshd -E``). The
chunk parser (``logparse``) sends here the lines its one regex does not take, and the test suite checks
that both paths give the same event for every line. ``LineParser`` also owns what both paths share: the
counters, the timestamp clock and the address and port caches.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import Any

from hostward.agent.detectors.logcompile import Bucket, CompiledPatterns, default_compiled
from hostward.agent.detectors.logevents import LoginEvent, ParseCounters, normalise_address
from hostward.agent.detectors.logtime import CACHE_LIMIT, MONTHS, LogClock

AUTO = "auto"
DEFAULT_MAX_LINE = 16 * 1024


def port_number(text: str | None) -> int | None:
    """The port a pattern's ``port`` group took; None without one (or for thousands of digits)."""
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


class _Cache(dict[Any, Any]):
    """A dict that fills a missing key with ``fill(key)`` (which stores it): a hit costs one lookup."""

    def __init__(self, fill: Callable[[Any], Any]) -> None:
        super().__init__()
        self._fill = fill

    def __missing__(self, key: Any) -> Any:
        return self._fill(key)


class LineParser:
    """Parses the lines of one log source one at a time and counts what it saw.

    ``service`` is the source's hint: ``auto`` recognises syslog lines by their program tag and tries
    every service's own formats and bare messages; a service name restricts the lines without a syslog
    header to that service (``sshd`` for an ``sshd -E`` file). ``tz`` is the zone of timestamps written
    without one (None: the host's local time); ``clock`` gives "now" (epoch) to infer their year.
    """

    def __init__(
        self,
        compiled: CompiledPatterns | None = None,
        *,
        service: str = AUTO,
        tz: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self._c = compiled or default_compiled()
        if service != AUTO and service not in self._c.by_service:
            raise ValueError(
                f"unknown service {service!r}; use auto or one of {', '.join(sorted(self._c.by_service))}"
            )
        self.service = service
        self._max_line = max_line
        self._time = LogClock(tz, clock)
        # address texts -> normalised addresses; attackers repeat themselves, so most are hits
        self._addr_cache: dict[str | None, str | None] = _Cache(self._normalise)
        self._addr_cache[None] = None
        self._events = self._skipped = self._unmatched = self._unparsed = 0
        self._oversize = self._invalid_address = 0
        if service == AUTO:
            self._formats = list(self._c.formats)
            self._bare = [self._c.by_service[s] for s in self._c.bare]
        else:
            spec = self._c.patterns.services[service]
            self._formats = list(spec.formats)
            self._bare = [self._c.by_service[service]] if spec.bare else []

    @property
    def counters(self) -> ParseCounters:
        return ParseCounters(
            events=self._events,
            skipped=self._skipped,
            unmatched=self._unmatched,
            unparsed=self._unparsed,
            oversize=self._oversize,
            invalid_address=self._invalid_address,
        )

    def parse_message(self, program: str, message: str, timestamp: float | None) -> LoginEvent | None:
        """The event of one journald entry (``SYSLOG_IDENTIFIER``, ``MESSAGE``, realtime timestamp)."""
        if len(message) > self._max_line:
            self._too_long()
            return None
        message = message.rstrip("\r\n")
        bucket = self._c.by_program.get(program)
        if bucket is None:
            if not message.startswith("pam_") or self._c.pam is None:
                self._skipped += 1
                return None
            bucket = self._c.pam
        m = bucket.rx.match(message)
        if m is None:
            if bucket is self._c.pam:
                self._skipped += 1
            else:
                self._unmatched += 1
            return None
        return self._event(m, bucket, timestamp)

    def parse_one(self, line: str) -> LoginEvent | None:
        """The reference path for one line (with or without its line ending): the event, or None."""
        if len(line) > self._max_line:
            self._too_long()
            return None
        line = line.rstrip("\r\n")
        if line[3:4] == " " and line[15:16] == " " and line[:3] in MONTHS:
            host, rfc = 16, False
        elif line[10:11] == "T" and line[4:5] == "-" and line.find(" ", 19) > 0:
            host, rfc = line.find(" ", 19) + 1, True
        else:
            return self._other_line(line)
        sp = line.find(" ", host)
        end = line.find(" ", sp + 1)
        if sp < 0 or end < 0 or line[end - 1] != ":":
            return self._other_line(line)
        br = line.find("[", sp + 1, end)
        bucket = self._c.by_program.get(line[sp + 1 : br if br > 0 else end - 1])
        watched = bucket is not None
        if bucket is None:
            if not line.startswith("pam_", end + 1) or self._c.pam is None:
                self._skipped += 1
                return None
            bucket = self._c.pam
        m = bucket.rx.match(line, end + 1)
        if m is None:
            if watched:
                self._unmatched += 1
            else:
                self._skipped += 1
            return None
        ts = self._time.iso(line[: host - 1]) if rfc else self._time.bsd(line[:15])
        return self._event(m, bucket, ts)

    # ---- internals ---------------------------------------------------------------------------------

    def _too_long(self) -> None:
        self._unparsed += 1
        self._oversize += 1

    def _event(self, m: re.Match[str], bucket: Bucket, ts: float | None) -> LoginEvent:
        alt = bucket.alts[m.lastindex or 0]
        assert alt is not None  # every alternative of a bucket ends with its marker group
        kind, service, user_default, method_default, pattern_id, counting, groups = alt
        user, raw_addr, port, method, alt_user = m.group(*groups)
        if not user and alt_user:
            user = alt_user
        self._events += 1
        return LoginEvent(
            kind,
            service,
            user_default if user is None else user,
            self._addr_cache[raw_addr],
            method or method_default,
            ts,
            pattern_id,
            port_number(port),
            counting,
        )

    def _normalise(self, raw: str | None) -> str | None:
        if len(self._addr_cache) >= CACHE_LIMIT:
            self._addr_cache.clear()
            self._addr_cache[None] = None
        value = normalise_address(raw) if raw is not None else None
        if value is None and raw is not None:
            self._invalid_address += 1  # counted once per distinct text while it stays cached
        self._addr_cache[raw] = value
        return value

    def _other_line(self, line: str) -> LoginEvent | None:
        """A line without a syslog header: a service's own format, or a bare message (``sshd -E``)."""
        for fmt in self._formats:
            fm = fmt.regex.match(line)
            if fm is None:
                continue
            bucket = self._c.by_service[fmt.service]
            m = bucket.rx.match(line, fm.start("msg"))
            if m is not None:
                return self._event(m, bucket, self._time.formatted(fm.group("ts"), fmt.time_format))
        for bucket in self._bare:
            m = bucket.rx.match(line)
            if m is not None:
                return self._event(m, bucket, None)
        self._unparsed += 1
        return None
