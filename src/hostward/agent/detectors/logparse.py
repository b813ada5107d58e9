"""Fast login-log parser: one log line (or one journald message) in, at most one ``LoginEvent`` out.

Speed comes from doing little per line: the syslog header is split with ``str.find`` (no regex); the
program tag picks the patterns (a dict lookup — lines of other programs cost nothing more); the
patterns of a program are compiled into ONE alternation matched at the message start, where the
regex engine rejects an alternative on its first literal character; timestamps, addresses and ports
are converted through small caches, because attackers repeat themselves.

Pure logic, no I/O: bytes are decoded by the collector; a line that is garbage, binary, over
``max_line`` characters or cut short never raises — it is counted (``unparsed``/``unmatched``).
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple

from hostward.agent.detectors.logpatterns import (
    ANY_PROGRAM,
    PatternSet,
    PatternSpec,
    ServiceSpec,
    load_patterns,
    prefixed_regex,
)

AUTO = "auto"
DEFAULT_MAX_LINE = 16 * 1024
_CACHE_LIMIT = 65_536
_FUTURE_SLACK_S = 7 * 86_400  # a syslog date further ahead than this belongs to last year
_MONTHS = {m: i for i, m in enumerate(("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec").split(), 1)}
_FIELDS = ("user", "address", "port", "method", "service", "alt_user")


class LoginEvent(NamedTuple):
    """One recognised login-related line. ``timestamp`` is epoch seconds (None when the line has none)."""

    kind: str  # failure | success | other
    service: str
    user: str | None
    address: str | None  # normalised: IPv4-mapped IPv6 -> IPv4, zone id dropped; None if not an IP
    method: str | None
    timestamp: float | None
    pattern: str
    port: int | None
    counting: str  # attempt | connection | followup ("" unless a failure)

    @property
    def when(self) -> datetime | None:
        return None if self.timestamp is None else datetime.fromtimestamp(self.timestamp, UTC)


@dataclass
class ParseCounters:
    """Every line lands in exactly one of events / skipped / unmatched / unparsed."""

    events: int = 0  # recognised (any kind)
    skipped: int = 0  # well-formed line of a program we do not watch
    unmatched: int = 0  # a watched program's line no pattern matched (normal for most messages)
    unparsed: int = 0  # no recognisable structure: garbage, binary, cut short, oversize
    oversize: int = 0  # part of unparsed: longer than max_line
    invalid_address: int = 0  # recognised, but the address text is no IP address (a host name, junk)

    @property
    def lines(self) -> int:
        return self.events + self.skipped + self.unmatched + self.unparsed

    def as_dict(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "events": self.events,
            "skipped": self.skipped,
            "unmatched": self.unmatched,
            "unparsed": self.unparsed,
            "oversize": self.oversize,
            "invalid_address": self.invalid_address,
        }


def normalise_address(text: str) -> str | None:
    """Canonical text of an IP address; IPv4-mapped IPv6 becomes IPv4; None when ``text`` is no IP."""
    value = text.strip().strip("[]")
    zone = value.find("%")
    if zone >= 0:
        value = value[:zone]
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


# What one alternative of a combined regex means: (kind, service, default user, default method,
# pattern id, counting, group indices). A plain tuple: unpacking it is the cheapest thing per line.
_Alt = tuple[str, str, "str | None", "str | None", str, str, tuple[int, ...]]
_NEW = tuple.__new__  # builds a LoginEvent without running NamedTuple.__new__ in Python


def _alternatives(patterns: list[PatternSpec], prefix: str) -> list[str]:
    # Each alternative ENDS with an empty marker group: it closes last, so ``match.lastindex`` names the
    # alternative, and the alternative still begins with its own first literal, which lets the regex
    # engine skip it after one character comparison (it cannot when the alternative opens a group).
    return [f"{prefixed_regex(p, f'{prefix}{i}_')}(?P<{prefix}{i}>)" for i, p in enumerate(patterns)]


def _alt_table(
    rx: re.Pattern[str], groups: list[tuple[str, list[PatternSpec]]], extra: tuple[str, ...] = ()
) -> tuple[_Alt | None, ...]:
    never = rx.groupindex["never"]
    table: list[_Alt | None] = [None] * (rx.groups + 1)
    for prefix, patterns in groups:
        for i, p in enumerate(patterns):
            idx = tuple(rx.groupindex.get(f"{prefix}{i}_{name}", never) for name in _FIELDS)
            idx += tuple(rx.groupindex[name] for name in extra)
            table[rx.groupindex[f"{prefix}{i}"]] = (p.kind, p.service, p.user, p.method, p.id, p.counting, idx)
    return tuple(table)


@dataclass(frozen=True)
class _Bucket:
    """The patterns tried for one program (or one service's own format), as one anchored alternation."""

    rx: re.Pattern[str]
    alts: tuple[_Alt | None, ...]  # by ``match.lastindex``


def _compile_bucket(patterns: list[PatternSpec]) -> _Bucket:
    rx = re.compile("(?:" + "|".join([*_alternatives(patterns, "a"), "(?P<never>(?!))"]) + ")")
    return _Bucket(rx=rx, alts=_alt_table(rx, [("a", patterns)]))


_BSD_TS = r"(?P<bsd>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d)"
_ISO_TS = r"(?P<iso>\d{4}-\d\d-\d\dT\S+)"
_PID = r"(?:\[\d+\])?: "


class CompiledPatterns:
    """The pattern set compiled for parsing; build once, share between parsers.

    Two forms: per-program buckets (the reference path, also used for journald messages), and one
    regex for a whole syslog line — header, program tag and every program's alternatives — which
    parses a typical line in a single call into the regex engine. A line the one-regex form does not
    match goes the reference path, so the fast form can only add speed, never change a result
    (``tests/unit/test_logparse.py`` checks that the two agree).
    """

    def __init__(self, patterns: PatternSet) -> None:
        self.patterns = patterns
        pam = [p for s in patterns.services.values() if ANY_PROGRAM in s.programs for p in s.patterns]
        self.pam: _Bucket | None = _compile_bucket(pam) if pam else None
        self.by_service: dict[str, _Bucket] = {}
        self.by_program: dict[str, _Bucket] = {}
        tag_parts: list[str] = []
        groups: list[tuple[str, list[PatternSpec]]] = []
        for n, spec in enumerate(patterns.services.values()):
            own = list(spec.patterns)
            if ANY_PROGRAM not in spec.programs:
                own += pam
            self.by_service[spec.service] = bucket = _compile_bucket(own)
            programs = [p for p in spec.programs if p != ANY_PROGRAM]
            for program in programs:
                self.by_program[program] = bucket
            if programs:
                names = "|".join(re.escape(p) for p in sorted(programs, key=len, reverse=True))
                tag_parts.append(f"(?:{names}){_PID}(?:{'|'.join(_alternatives(own, f's{n}_'))})")
                groups.append((f"s{n}_", own))
        if pam:
            tag_parts.append(rf"[^\s\[:]+{_PID}(?:{'|'.join(_alternatives(pam, 'pam_'))})")
            groups.append(("pam_", pam))
        tag_parts.append("(?P<never>(?!))")
        self.line_rx = re.compile(rf"(?:{_BSD_TS}|{_ISO_TS}) \S+ (?:{'|'.join(tag_parts)})")
        self.line_alts = _alt_table(self.line_rx, groups, extra=("bsd", "iso"))
        self.formats = [f for s in patterns.services.values() for f in s.formats]
        self.bare = [s.service for s in patterns.services.values() if s.bare]


_compiled_default: CompiledPatterns | None = None


def default_compiled() -> CompiledPatterns:
    """The shipped patterns, compiled once per process."""
    global _compiled_default
    if _compiled_default is None:
        _compiled_default = CompiledPatterns(load_patterns())
    return _compiled_default


class LogParser:
    """Turns lines of one log source into ``LoginEvent`` objects and keeps the source's counters.

    ``service`` is the source's hint: ``auto`` recognises syslog lines by their program tag and tries
    every service's own formats and bare messages; a service name restricts the prefix-less lines to
    that service (``sshd`` for an ``sshd -E`` file). ``tz`` is the zone of syslog timestamps without
    one (None: the host's local time); ``clock`` gives "now" (epoch seconds) to infer their year.
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
            raise ValueError(f"unknown service {service!r}; known: {', '.join(sorted(self._c.by_service))}")
        self.service = service
        self._tz = tz
        self._clock = clock
        self._max_line = max_line
        self._line_match = self._c.line_rx.match
        self._line_alts = self._c.line_alts
        # plain int attributes: the hot path increments one of them per line (see ``counters``)
        self._events = self._skipped = self._unmatched = self._unparsed = 0
        self._oversize = self._invalid_address = 0
        self._addr_cache: dict[str, str] = {}
        self._sec_cache: dict[str, float | None] = {}
        self._hour_cache: dict[str, float | None] = {}
        self._ts_cache: dict[str, float | None] = {}
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

    # ---- public --------------------------------------------------------------------------------------

    def parse_line(self, line: str) -> LoginEvent | None:
        """The event of one log line (with or without its line ending), or None."""
        if len(line) > self._max_line:
            self._unparsed += 1
            self._oversize += 1
            return None
        m = self._line_match(line)
        if m is None:
            return self._parse_slow(line)
        kind, service, user_default, method_default, pattern_id, counting, groups = self._line_alts[m.lastindex]  # type: ignore[index,misc]
        user, addr, port, method, own_service, alt_user, bsd, iso = m.group(*groups)
        if addr is not None:
            address = self._addr_cache.get(addr)
            if address is None:
                address = self._normalise(addr)
            if not address:
                address = None
                self._invalid_address += 1
        else:
            address = None
        if bsd is not None:
            ts = self._sec_cache.get(bsd)
            if ts is None:
                ts = self._bsd_epoch(bsd)
        else:
            ts = self._iso_epoch(iso)
        if not user and alt_user:
            user = alt_user
        self._events += 1
        return _NEW(  # type: ignore[no-any-return]
            LoginEvent,
            (
                kind,
                own_service or service,
                user_default if user is None else user,
                address,
                method or method_default,
                ts,
                pattern_id,
                int(port) if port else None,
                counting,
            ),
        )

    def parse_message(self, program: str, message: str, timestamp: float | None) -> LoginEvent | None:
        """The event of one journald entry (``SYSLOG_IDENTIFIER``/``_COMM``, ``MESSAGE``, realtime)."""
        if len(message) > self._max_line:
            self._unparsed += 1
            self._oversize += 1
            return None
        message = message.rstrip("\r\n")
        bucket = self._c.by_program.get(program)
        if bucket is None:
            if message.startswith("pam_") and self._c.pam is not None:
                bucket = self._c.pam
            else:
                self._skipped += 1
                return None
        m = bucket.rx.match(message)
        if m is None:
            self._unmatched += 1
            return None
        return self._event(m, bucket, timestamp)

    def parse_lines(self, lines: Iterable[str]) -> Iterator[tuple[int, LoginEvent]]:
        """(1-based line number, event) for every recognised line."""
        parse = self.parse_line
        for number, line in enumerate(lines, 1):
            event = parse(line)
            if event is not None:
                yield number, event

    # ---- internals ---------------------------------------------------------------------------------

    def _parse_slow(self, line: str) -> LoginEvent | None:
        """The reference path: split the syslog header with str.find, then the program's bucket."""
        line = line.rstrip("\r\n")
        if line[3:4] == " " and line[15:16] == " " and line[:3] in _MONTHS:
            host = 16
            rfc = False
        elif line[10:11] == "T" and line[4:5] == "-":
            host = line.find(" ", 19) + 1
            rfc = True
            if host == 0:
                return self._other_line(line)
        else:
            return self._other_line(line)
        sp = line.find(" ", host)
        end = line.find(" ", sp + 1)
        if sp < 0 or end < 0 or line[end - 1] != ":":
            return self._other_line(line)
        br = line.find("[", sp + 1, end)
        bucket = self._c.by_program.get(line[sp + 1 : br if br > 0 else end - 1])
        if bucket is None:
            if line.startswith("pam_", end + 1) and self._c.pam is not None:
                bucket = self._c.pam
            else:
                self._skipped += 1
                return None
        m = bucket.rx.match(line, end + 1)
        if m is None:
            self._unmatched += 1
            return None
        ts = self._iso_epoch(line[: host - 1]) if rfc else self._bsd_epoch(line[:15])
        return self._event(m, bucket, ts)

    def _event(self, m: re.Match[str], bucket: _Bucket, ts: float | None) -> LoginEvent:
        alt = bucket.alts[m.lastindex or 0]
        assert alt is not None  # every alternative ends with its marker group
        kind, service, user_default, method_default, pattern_id, counting, groups = alt
        user, raw_addr, port, method, own_service, alt_user = m.group(*groups)
        address = None
        if raw_addr is not None:
            address = self._addr_cache.get(raw_addr)
            if address is None:
                address = self._normalise(raw_addr)
            if not address:
                address = None
                self._invalid_address += 1
        if not user and alt_user:
            user = alt_user
        self._events += 1
        return LoginEvent(
            kind,
            own_service or service,
            user_default if user is None else user,
            address,
            method or method_default,
            ts,
            pattern_id,
            int(port) if port else None,
            counting,
        )

    def _normalise(self, raw: str) -> str:
        if len(self._addr_cache) >= _CACHE_LIMIT:
            self._addr_cache.clear()
        value = normalise_address(raw) or ""
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
                return self._event(m, bucket, self._format_epoch(fm.group("ts"), fmt.time_format))
        for bucket in self._bare:
            m = bucket.rx.match(line)
            if m is not None:
                return self._event(m, bucket, None)
        self._unparsed += 1
        return None

    def _now(self) -> float:
        return self._clock()

    def _local_epoch(self, year: int, month: int, day: int, hour: int, minute: int = 0, sec: int = 0) -> float:
        if self._tz is not None:
            return datetime(year, month, day, hour, minute, sec, tzinfo=self._tz).timestamp()
        datetime(year, month, day, hour, minute, sec)  # validates (mktime would normalise Feb 30)
        return time.mktime((year, month, day, hour, minute, sec, 0, 0, -1))

    def _year_now(self, now: float) -> int:
        if self._tz is not None:
            return datetime.fromtimestamp(now, self._tz).year
        return time.localtime(now).tm_year

    def _infer(self, month: int, day: int, hour: int, minute: int = 0, sec: int = 0) -> float | None:
        """Epoch of a year-less date: this year, unless that lies more than a week ahead (then last year)."""
        now = self._now()
        year = self._year_now(now)
        for candidate in (year, year - 1):
            try:
                value = self._local_epoch(candidate, month, day, hour, minute, sec)
            except (ValueError, OverflowError):
                continue
            if value <= now + _FUTURE_SLACK_S:
                return value
        return None

    def _bsd_epoch(self, text: str) -> float | None:
        """``Nov 24 13:57:44`` (``Nov  4 ...`` too) -> epoch, via a per-hour cache."""
        if len(self._sec_cache) >= _CACHE_LIMIT:
            self._sec_cache.clear()
            self._hour_cache.clear()
        value: float | None = None
        hour_key = text[:9]
        base = self._hour_cache.get(hour_key)
        try:
            if base is None and hour_key not in self._hour_cache:
                day = int(text[4:6])
                hour = int(text[7:9])
                base = self._infer(_MONTHS[text[:3]], day, hour) if 0 <= hour < 24 else None
                self._hour_cache[hour_key] = base
            minute, sec = int(text[10:12]), int(text[13:15])
            if base is not None and text[9] == ":" and text[12] == ":" and minute < 60 and sec < 61:
                value = base + minute * 60 + sec
        except (ValueError, KeyError):
            value = None
        self._sec_cache[text] = value
        return value

    def _iso_epoch(self, text: str) -> float | None:
        if text in self._ts_cache:
            return self._ts_cache[text]
        if len(self._ts_cache) >= _CACHE_LIMIT:
            self._ts_cache.clear()
        value: float | None
        try:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                value = self._local_epoch(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
                value += dt.microsecond / 1e6
            else:
                value = dt.timestamp()
        except (ValueError, OverflowError):
            value = None
        self._ts_cache[text] = value
        return value

    def _format_epoch(self, text: str, time_format: str) -> float | None:
        if time_format == "iso":
            return self._iso_epoch(text)
        key = f"{time_format}\x00{text}"
        if key in self._ts_cache:
            return self._ts_cache[key]
        if len(self._ts_cache) >= _CACHE_LIMIT:
            self._ts_cache.clear()
        value: float | None
        try:
            has_year = "%Y" in time_format or "%y" in time_format
            # a year-less format gets a leap year so that "Feb 29" parses; the year is inferred below
            parsed = datetime.strptime(text if has_year else f"2000 {text}", time_format if has_year else f"%Y {time_format}")
            if has_year:
                value = self._local_epoch(
                    parsed.year, parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second
                )
            else:
                value = self._infer(parsed.month, parsed.day, parsed.hour, parsed.minute, parsed.second)
        except (ValueError, OverflowError):
            value = None
        self._ts_cache[key] = value
        return value


def epoch_to_iso(value: float | None) -> str | None:
    """ISO 8601 UTC text of an epoch (for JSON output)."""
    if value is None:
        return None
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=value)).isoformat()
