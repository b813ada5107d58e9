"""The login patterns compiled for parsing: one multi-line regex for chunks, one bucket per program.

All patterns go into ONE multi-line regex for whole syslog lines — timestamp, host, program tag, then
the alternatives of that program's patterns — which the chunk parser runs over a whole read of a log.
Every line is matched exactly once (a last catch-all alternative takes the lines without a syslog
header). The groups of the alternative that matched say what it means (``match.lastindex``), through a
table built here. The reference path matches one message against its program's bucket: the same
patterns as one anchored alternation.

Optional groups ``(?:X)?`` are written ``(?:X|)`` before compiling (``logpatterns.branch_optionals``):
the same match, but Python's engine runs a ``?`` on a group through its general repeat machinery (a
repeat context and saved marks per attempt) and an alternation through a cheap branch, which makes the
whole chunk regex about a fifth faster.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hostward.agent.detectors.logpatterns import (
    ANY_PROGRAM,
    PatternSet,
    PatternSpec,
    branch_optionals,
    load_patterns,
    prefixed_regex,
    single_line_regex,
)

FIELDS = ("user", "address", "port", "method", "alt_user")
FAST_FIELDS = ("user", "address", "port", "method", "ts")
SKIPPED = "skipped"
UNMATCHED = "unmatched"
SLOW = "slow"

# What one alternative of a bucket regex means: (kind, service, default user, default method, pattern
# id, counting, group indices of FIELDS). The chunk regex uses a shorter tuple for the patterns whose
# groups go into an event as they are: (kind, service, pattern id, counting, indices of FAST_FIELDS);
# plain tuples, because unpacking one is the cheapest thing to do per line.
Alt = tuple[str, str, "str | None", "str | None", str, str, tuple[int, ...]]
FastAlt = tuple[str, str, str, str, tuple[int, ...]]

# one group for both timestamp forms (one text less per line); the parser tells them apart by "Mmm "
_BSD_TS = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [ \d]\d \d\d:\d\d:\d\d"
_TS = rf"(?P<ts>{_BSD_TS}|\d{{4}}-\d\d-\d\dT\S+)"
_TAG_END = r"(?:\[\d+\]: |: )"
_ANY_TAG = r"[^\s\[:]++"


def _alternatives(
    patterns: list[PatternSpec], prefix: str, *, mark_all: bool = False, chunk: bool = False
) -> list[str]:
    # ``match.lastindex`` (the last group closed) tells which alternative matched, because every group
    # belongs to exactly one alternative. An empty marker group goes at the END of an alternative (of
    # those without groups, or of all with ``mark_all``), so the alternative still begins with its own
    # first literal — which lets the engine skip it after one character comparison. The chunk regex
    # keeps its groups few on purpose: every match pays for each group.
    return [
        branch_optionals((single_line_regex if chunk else str)(prefixed_regex(p, f"{prefix}{i}_")))
        + ("" if "(?P<" in p.regex and not mark_all else f"(?P<{prefix}{i}_>)")
        for i, p in enumerate(patterns)
    ]


def _alt_table(rx: re.Pattern[str], groups: list[tuple[str, list[PatternSpec]]]) -> list[Alt | None]:
    never = rx.groupindex["never"]
    table: list[Alt | None] = [None] * (rx.groups + 1)
    for prefix, patterns in groups:
        for i, p in enumerate(patterns):
            own = f"{prefix}{i}_"
            idx = tuple(rx.groupindex.get(f"{own}{name}", never) for name in FIELDS)
            alt: Alt = (p.kind, p.service, p.user, p.method, p.id, p.counting, idx)
            for name, index in rx.groupindex.items():
                if name.startswith(own):
                    table[index] = alt
    return table


def _fast_table(rx: re.Pattern[str], groups: list[tuple[str, list[PatternSpec]]]) -> list[FastAlt | str]:
    """Entries for the chunk regex: a ``FastAlt`` for plain patterns, else a word that says what to do
    (``skipped``, ``unmatched``, or ``slow``: the reference path — special patterns, lines without a
    syslog header, and the odd case of a pattern none of whose groups took part)."""
    never = rx.groupindex["never"]
    table: list[FastAlt | str] = [SLOW] * (rx.groups + 1)
    for prefix, patterns in groups:
        for i, p in enumerate(patterns):
            own = f"{prefix}{i}_"
            entry: FastAlt | str
            if p.special:
                entry = SLOW
            else:
                idx = tuple(
                    rx.groupindex.get(f"{own}{n}", never) if n != "ts" else rx.groupindex[n]
                    for n in FAST_FIELDS
                )
                entry = (p.kind, p.service, p.id, p.counting, idx)
            for name, index in rx.groupindex.items():
                if name.startswith(own):
                    table[index] = entry
    table[rx.groupindex["unmatched_"]] = UNMATCHED
    table[rx.groupindex["skipped_"]] = SKIPPED
    return table


@dataclass(frozen=True)
class Bucket:
    """The patterns tried for one program (or one service's own format), as one anchored alternation."""

    rx: re.Pattern[str]
    alts: tuple[Alt | None, ...]


def _compile_bucket(patterns: list[PatternSpec]) -> Bucket:
    body = "|".join([*_alternatives(patterns, "a", mark_all=True), "(?P<never>(?!))"])
    rx = re.compile(f"(?:{body})")
    return Bucket(rx=rx, alts=tuple(_alt_table(rx, [("a", patterns)])))


class CompiledPatterns:
    """The pattern set compiled for parsing; build once per process, share between parsers."""

    def __init__(self, patterns: PatternSet) -> None:
        self.patterns = patterns
        pam = [p for s in patterns.services.values() if ANY_PROGRAM in s.programs for p in s.patterns]
        self.pam: Bucket | None = _compile_bucket(pam) if pam else None
        self.by_service: dict[str, Bucket] = {}
        self.by_program: dict[str, Bucket] = {}
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
        self._syslog = rf"{_TS} \S++ (?:{'|'.join(branches)})"
        self._groups = groups
        self._chunk: tuple[re.Pattern[str], list[FastAlt | str]] | None = None
        self.formats = [f for s in patterns.services.values() for f in s.formats]
        self.bare = [s.service for s in patterns.services.values() if s.bare]

    def chunk_regex(self) -> tuple[re.Pattern[str], list[FastAlt | str]]:
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
