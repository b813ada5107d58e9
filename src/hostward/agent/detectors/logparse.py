"""Fast login-log parser: chunks of log text (or journald messages) in, ``LoginEvent`` tuples out.

Speed comes from doing little in Python per line. All patterns are compiled into ONE multi-line regex
for whole syslog lines — timestamp, host, program tag, then the alternatives of that program's patterns
— and ``finditer`` runs it over a whole chunk of text (what one read of the log gave), so there is no
per-line split, decode or call: the regex engine walks from one line to the next, rejects a
non-matching alternative after one character comparison and ends on a line of a program we do not watch
right after its tag. Every line is matched exactly once (a last catch-all alternative takes the lines
without a syslog header), so the counters stay exact. The groups of the alternative that matched say
what it means (``match.lastindex``); timestamps, addresses and ports are converted through small
caches, because attackers repeat themselves, and only for the lines that are events.

Lines the chunk regex does not take (no syslog header, a service's own log format, bare ``sshd -E``
messages, patterns with defaults) go the reference path: the header is split with ``str.find`` and the
program's own bucket of patterns is tried. Both paths give the same event for a line; the test suite
checks it.

Pure logic, no I/O: bytes are decoded by the collector. A line that is garbage, binary, over
``max_line`` characters or cut short never raises — it is counted.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, NamedTuple, cast

from hostward.agent.detectors.logpatterns import (
    ANY_PROGRAM,
    PatternSet,
    PatternSpec,
    load_patterns,
    prefixed_regex,
    single_line_regex,
)
from hostward.agent.detectors.logtime import CACHE_LIMIT, MONTHS, SECONDS, LogClock

AUTO = "auto"
DEFAULT_MAX_LINE = 16 * 1024
_FIELDS = ("user", "address", "port", "method", "alt_user")
_FAST_FIELDS = ("user", "address", "port", "method", "bsd", "iso")
_MISS = object()
_TRAILING_CR = re.compile(r"\r+(?=\n|\Z)")


class _Cache(dict[Any, Any]):
    """A dict that fills a missing key with ``fill(key)`` (which stores it): a hit costs one lookup."""

    def __init__(self, fill: Callable[[Any], Any]) -> None:
        super().__init__()
        self._fill = fill

    def __missing__(self, key: Any) -> Any:
        return self._fill(key)


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
    skipped: int = 0  # a well-formed line of a program we do not watch
    unmatched: int = 0  # a watched program's line that no pattern matched (normal for most messages)
    unparsed: int = 0  # no recognisable structure: garbage, binary, cut short, oversize
    oversize: int = 0  # part of unparsed: longer than max_line
    invalid_address: int = 0  # distinct address texts (per cache period) that are no IP: host names, junk

    @property
    def lines(self) -> int:
        return self.events + self.skipped + self.unmatched + self.unparsed

    def as_dict(self) -> dict[str, int]:
        return {"lines": self.lines, **asdict(self)}


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


# What one alternative of a bucket regex means: (kind, service, default user, default method, pattern
# id, counting, group indices of _FIELDS). The one-line regex uses a shorter tuple for the patterns
# whose groups go into an event as they are: (kind, service, pattern id, counting, indices of
# _FAST_FIELDS); plain tuples, because unpacking one is the cheapest thing to do per line.
_Alt = tuple[str, str, "str | None", "str | None", str, str, tuple[int, ...]]
_NEW = tuple.__new__  # builds a LoginEvent without running NamedTuple.__new__ in Python
_BSD_TS = r"(?P<bsd>(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d)"
_ISO_TS = r"(?P<iso>\d{4}-\d\d-\d\dT\S+)"
_TAG_END = r"(?:\[\d+\])?: "
_ANY_TAG = r"[^\s\[:]++"


def _alternatives(
    patterns: list[PatternSpec], prefix: str, *, mark_all: bool = False, chunk: bool = False
) -> list[str]:
    # ``match.lastindex`` (the last group closed) tells which alternative matched, because every group
    # belongs to exactly one alternative. An empty marker group goes at the END of an alternative (of
    # those without groups, or of all with ``mark_all``), so the alternative still begins with its own
    # first literal — which lets the engine skip it after one character comparison. The one-line regex
    # keeps its groups few on purpose: every match pays for each group.
    return [
        (single_line_regex if chunk else str)(prefixed_regex(p, f"{prefix}{i}_"))
        + ("" if "(?P<" in p.regex and not mark_all else f"(?P<{prefix}{i}_>)")
        for i, p in enumerate(patterns)
    ]


def _alt_table(rx: re.Pattern[str], groups: list[tuple[str, list[PatternSpec]]]) -> list[_Alt | None]:
    never = rx.groupindex["never"]
    table: list[_Alt | None] = [None] * (rx.groups + 1)
    for prefix, patterns in groups:
        for i, p in enumerate(patterns):
            own = f"{prefix}{i}_"
            idx = tuple(rx.groupindex.get(f"{own}{name}", never) for name in _FIELDS)
            alt: _Alt = (p.kind, p.service, p.user, p.method, p.id, p.counting, idx)
            for name, index in rx.groupindex.items():
                if name.startswith(own):
                    table[index] = alt
    return table


def _fast_table(rx: re.Pattern[str], groups: list[tuple[str, list[PatternSpec]]]) -> list[object]:
    """Entries for the chunk regex: a 5-tuple for plain patterns, else a word that says what to do
    (``skipped``, ``unmatched``, or ``slow``: the reference path — special patterns, lines without a
    syslog header, and the odd case of a pattern none of whose groups took part)."""
    never = rx.groupindex["never"]
    table: list[object] = ["slow"] * (rx.groups + 1)
    for prefix, patterns in groups:
        for i, p in enumerate(patterns):
            own = f"{prefix}{i}_"
            entry: object
            if p.special:
                entry = "slow"
            else:
                idx = tuple(
                    rx.groupindex.get(f"{own}{n}", never) if n not in ("bsd", "iso") else rx.groupindex[n]
                    for n in _FAST_FIELDS
                )
                entry = (p.kind, p.service, p.id, p.counting, idx)
            for name, index in rx.groupindex.items():
                if name.startswith(own):
                    table[index] = entry
    table[rx.groupindex["unmatched_"]] = "unmatched"
    table[rx.groupindex["skipped_"]] = "skipped"
    return table


@dataclass(frozen=True)
class _Bucket:
    """The patterns tried for one program (or one service's own format), as one anchored alternation."""

    rx: re.Pattern[str]
    alts: tuple[_Alt | None, ...]


def _compile_bucket(patterns: list[PatternSpec]) -> _Bucket:
    rx = re.compile("(?:" + "|".join([*_alternatives(patterns, "a", mark_all=True), "(?P<never>(?!))"]) + ")")
    return _Bucket(rx=rx, alts=tuple(_alt_table(rx, [("a", patterns)])))


class CompiledPatterns:
    """The pattern set compiled for parsing; build once per process, share between parsers."""

    def __init__(self, patterns: PatternSet) -> None:
        self.patterns = patterns
        pam = [p for s in patterns.services.values() if ANY_PROGRAM in s.programs for p in s.patterns]
        self.pam: _Bucket | None = _compile_bucket(pam) if pam else None
        self.by_service: dict[str, _Bucket] = {}
        self.by_program: dict[str, _Bucket] = {}
        branches: list[str] = []
        groups: list[tuple[str, list[PatternSpec]]] = []
        for n, spec in enumerate(patterns.services.values()):
            programs = [p for p in spec.programs if p != ANY_PROGRAM]
            own = list(spec.patterns) if ANY_PROGRAM in spec.programs else [*spec.patterns, *pam]
            self.by_service[spec.service] = bucket = _compile_bucket(own)
            for program in programs:
                self.by_program[program] = bucket
            if programs:
                # PAM patterns are not repeated per program: when a watched program's own patterns fail,
                # the engine goes on to the any-program branch, which holds them once.
                names = "|".join(re.escape(p) for p in sorted(programs, key=len, reverse=True))
                alts = "|".join(_alternatives(list(spec.patterns), f"s{n}_", chunk=True))
                branches.append(f"(?:{names}){_TAG_END}(?:{alts})")
                groups.append((f"s{n}_", list(spec.patterns)))
        if pam:
            branches.append(f"{_ANY_TAG}{_TAG_END}(?:{'|'.join(_alternatives(pam, 'pam_', chunk=True))})")
            groups.append(("pam_", pam))
        # Last, two branches that only classify: a watched program's line no pattern took, and a line
        # of any other program. Their marker groups are the highest-numbered groups of the regex.
        watched = "|".join(re.escape(p) for p in sorted(self.by_program, key=len, reverse=True))
        branches.append(f"(?:{watched}){_TAG_END}(?P<unmatched_>)")
        branches.append(f"{_ANY_TAG}{_TAG_END}(?P<skipped_>)")
        branches.append("(?P<never>(?!))")
        self._syslog = rf"(?:{_BSD_TS}|{_ISO_TS}) \S++ (?:{'|'.join(branches)})"
        self._groups = groups
        self._chunk: tuple[re.Pattern[str], list[object]] | None = None
        self.formats = [f for s in patterns.services.values() for f in s.formats]
        self.bare = [s.service for s in patterns.services.values() if s.bare]

    def chunk_regex(self) -> tuple[re.Pattern[str], list[object]]:
        """The multi-line regex for chunks of syslog lines, and its table.

        Every line is matched exactly once, from its start to its end: a syslog line of a watched program
        by its pattern (or the ``unmatched_`` marker), another program's by ``skipped_``, and anything else
        — no syslog header — by the catch-all ``slow_``, which sends it the reference path.
        """
        if self._chunk is None:
            rx = re.compile(rf"(?m)^(?:{self._syslog}|(?P<slow_>))[^\n]*")
            self._chunk = (rx, _fast_table(rx, self._groups))
        return self._chunk


_compiled_default: CompiledPatterns | None = None


def default_compiled() -> CompiledPatterns:
    """The shipped patterns, compiled once per process."""
    global _compiled_default
    if _compiled_default is None:
        _compiled_default = CompiledPatterns(load_patterns())
    return _compiled_default


class LogParser:
    """Turns the lines of one log source into ``LoginEvent`` tuples and counts what it saw.

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
        self._addr_cache: dict[str | None, str | None] = _Cache(self._normalise)
        self._addr_cache[None] = None
        self._port_cache: dict[str | None, int | None] = _Cache(self._port)
        self._port_cache[None] = None
        self._chunk = self._c.chunk_regex()
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

    # ---- public --------------------------------------------------------------------------------------

    def parse_text(self, text: str) -> list[LoginEvent]:
        """The events of a chunk of whole lines (each ends with a newline, the last one may not), in
        order. The hot path: the agent hands over what one read of a log gave."""
        if not text:
            return []
        if "\r" in text:
            # CRLF (or CR) endings: the slow path strips them per line; do it for the chunk at once
            text = _TRAILING_CR.sub("", text)
        if self._may_hold_long_line(text):
            return self._parse_with_long_lines(text)
        return self._parse_chunk(text)

    def _may_hold_long_line(self, text: str) -> bool:
        """False when no line of ``text`` is longer than ``max_line``, found without a step per line: a
        line that long holds a whole aligned window of ``max_line // 2`` characters without a newline."""
        width = max(self._max_line // 2, 1)
        if len(text) <= self._max_line:
            return False
        find = text.find
        return any(find("\n", k, k + width) < 0 for k in range(0, len(text) - width + 1, width))

    def _parse_with_long_lines(self, text: str) -> list[LoginEvent]:
        out: list[LoginEvent] = []
        run: list[str] = []
        for line in text[:-1].split("\n") if text.endswith("\n") else text.split("\n"):
            if len(line) <= self._max_line:
                run.append(line)
                continue
            if run:
                out += self._parse_chunk("\n".join(run) + "\n")
                run = []
            self._too_long()
        if run:
            out += self._parse_chunk("\n".join(run) + "\n")
        return out

    def _parse_chunk(self, text: str) -> list[LoginEvent]:
        """``parse_text`` for a chunk without CR and without a line over ``max_line``: the hot loop."""
        rx, alts = self._chunk
        end = len(text) - 1 if text.endswith("\n") else len(text)
        out: list[LoginEvent] = []
        append = out.append
        addresses = self._addr_cache
        ports = self._port_cache
        minute_get = self._time.minute_cache.get
        second_get = SECONDS.get
        miss = _MISS
        slow = skipped = unmatched = 0
        last_bsd, last_ts = "", None  # consecutive syslog lines mostly share their second
        for m in rx.finditer(text, 0, end):
            entry: Any = alts[m.lastindex]  # type: ignore[index]
            if entry.__class__ is str:
                if entry == "skipped":
                    skipped += 1
                elif entry == "unmatched":
                    unmatched += 1
                else:  # no syslog line, too long, or a special pattern: the reference path decides
                    event = self._parse_slow(m.group())  # counts the event itself
                    if event is not None:
                        append(event)
                        slow += 1
                continue
            kind, service, pattern_id, counting, groups = entry
            user, addr, port, method, bsd, iso = m.group(*groups)
            address = addresses[addr]  # normalised on a miss (_Cache)
            if bsd == last_bsd:
                ts = last_ts
            elif bsd is not None:
                base: Any = minute_get(bsd[:12], miss)  # the regex took "Mmm dd hh:mm:ss"
                sec = second_get(bsd[13:15])
                if base is miss or sec is None:
                    ts = self._time.bsd(bsd)
                else:
                    ts = None if base is None else base + sec
                last_bsd, last_ts = bsd, ts
            else:
                ts = self._time.iso(iso)
            append(
                _NEW(
                    LoginEvent, (kind, service, user, address, method, ts, pattern_id, ports[port], counting)
                )
            )
        self._events += len(out) - slow
        self._skipped += skipped
        self._unmatched += unmatched
        return out

    def parse_many(self, lines: Iterable[str]) -> list[LoginEvent]:
        """The events of ``lines`` (each one line, with or without its line ending), in order."""
        batch = lines if isinstance(lines, list) else list(lines)
        if not batch:
            return []
        text = "\n".join(batch) + "\n"  # every line ends with its newline: an empty last line counts
        if text.count("\n") == len(batch):
            return self.parse_text(text)
        # some lines bring their own newline: join them as they are, but a line with a newline inside
        # is one line for the caller, so it goes the reference path whole
        out: list[LoginEvent] = []
        run: list[str] = []
        for line in batch:
            if "\n" not in line.rstrip("\r\n"):
                run.append(line.rstrip("\r\n"))
                continue
            out += self.parse_text("\n".join(run) + "\n") if run else []
            run = []
            event = self._parse_slow(line)
            if event is not None:
                out.append(event)
        if run:
            out += self.parse_text("\n".join(run) + "\n")
        return out

    def parse_line(self, line: str) -> LoginEvent | None:
        """The event of one log line, or None."""
        events = self.parse_many((line,))
        return events[0] if events else None

    def parse_lines(self, lines: Iterable[str]) -> Iterator[tuple[int, LoginEvent]]:
        """(1-based line number, event) for every recognised line (for ``hostward logtest``)."""
        for number, line in enumerate(lines, 1):
            event = self.parse_line(line)
            if event is not None:
                yield number, event

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

    # ---- internals ---------------------------------------------------------------------------------

    def _too_long(self) -> None:
        self._unparsed += 1
        self._oversize += 1

    def _parse_slow(self, line: str) -> LoginEvent | None:
        """The reference path: split the syslog header with ``str.find``, then the program's bucket."""
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

    def _event(self, m: re.Match[str], bucket: _Bucket, ts: float | None) -> LoginEvent:
        alt = bucket.alts[m.lastindex or 0]
        assert alt is not None  # every alternative of a bucket ends with its marker group
        kind, service, user_default, method_default, pattern_id, counting, groups = alt
        user, raw_addr, port, method, alt_user = m.group(*groups)
        cached = self._addr_cache.get(raw_addr, _MISS)
        address = self._normalise(raw_addr) if cached is _MISS else cast("str | None", cached)
        if not user and alt_user:
            user = alt_user
        self._events += 1
        return LoginEvent(
            kind,
            service,
            user_default if user is None else user,
            address,
            method or method_default,
            ts,
            pattern_id,
            int(port) if port else None,
            counting,
        )

    def _port(self, text: str | None) -> int | None:
        if len(self._port_cache) >= CACHE_LIMIT:
            self._port_cache.clear()
            self._port_cache[None] = None
        number = self._port_cache[text] = int(text) if text else None
        return number

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
