"""The chunk path (``LogParser.parse_text``, what the agent runs on each read of a log) against the
reference path line by line, and the rewrite that keeps every pattern inside one line."""

from __future__ import annotations

import random
import re

import pytest

from hostward.agent.detectors.logcompile import default_compiled
from hostward.agent.detectors.logevents import ADDRESS
from hostward.agent.detectors.logparse import LogParser
from hostward.agent.detectors.logpatterns import (
    PatternError,
    _load_pattern,
    branch_optionals,
    load_patterns,
    single_line_regex,
)
from tests.unit.test_logparse import NOW, corpus, new_parser


def reference(lines: list[str], **kw: object) -> tuple[list[object], object]:
    slow = new_parser(**kw)
    events = [e for e in (slow.parse_one(line) for line in lines) if e is not None]
    return events, slow.counters


def test_one_chunk_gives_what_the_reference_path_gives_line_by_line() -> None:
    lines = [line.replace("\n", " ") for line in corpus()]
    random.Random(3).shuffle(lines)
    want_events, want_counters = reference(lines)
    for text in ("\n".join(lines) + "\n", "\n".join(lines)):  # with and without the last newline
        p = new_parser()
        assert p.parse_text(text) == want_events
        assert p.counters == want_counters
        assert p.counters.lines == len(lines)


def test_chunks_split_anywhere_between_lines_give_the_same_result() -> None:
    lines = [line.replace("\n", " ") for line in corpus()]
    want_events, want_counters = reference(lines)
    rnd = random.Random(5)
    p = new_parser()
    got = []
    i = 0
    while i < len(lines):
        n = rnd.randint(1, 40)
        got += p.parse_text("".join(f"{line}\n" for line in lines[i : i + n]))
        i += n
    assert got == want_events and p.counters == want_counters


def test_crlf_empty_and_over_long_lines_inside_a_chunk() -> None:
    ok = "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2"
    lines = [
        ok + "\r",
        "",
        "",
        "Nov 24 13:57:45 web01 sshd[1]: Invalid user " + "A" * 300 + " from 203.0.113.8 port 2",
        ok.replace("203.0.113.7", "203.0.113.9") + "\r\r",
        "x" * 500,
        "Nov 24 13:57:44 web01 CRON[2]: " + "B" * 400,
        ok,
    ]
    want_events, want_counters = reference(lines, max_line=200)
    p = new_parser(max_line=200)
    events = p.parse_text("\n".join(lines) + "\n")
    assert events == want_events
    assert [e[ADDRESS] for e in events] == ["203.0.113.7", "203.0.113.9", "203.0.113.7"]
    assert p.counters == want_counters
    assert (p.counters.oversize, p.counters.unparsed, p.counters.lines) == (3, 5, len(lines))


def test_a_pattern_never_runs_on_into_the_next_line() -> None:
    # each first line is a near miss whose open end ([^"]*, \s*, [^']*) could reach into the next one
    chunk = "\n".join(
        [
            'Mon Nov 24 13:57:44 2025 [pid 2] [root] FAIL LOGIN: Client "203.0.113.7',
            '" trailing',
            "Nov 24 13:57:44 web01 sshd[1]: PAM 2 more authentication failures; logname= uid=0 rhost=",
            "  user=root",
            "Nov 24 13:57:44 web01 mysqld[3]: Access denied for user 'root'@'203.0.113.9",
            "' (using password: YES)",
        ]
    )
    p = new_parser()
    assert p.parse_text(chunk + "\n") == []
    assert p.counters.lines == 6
    assert p.parse_many(chunk.split("\n")) == []


def test_parse_many_takes_lines_with_or_without_endings() -> None:
    ok = "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2"
    for lines in ([ok, ok], [ok + "\n", ok + "\r\n"], [ok + "\n", ok]):
        p = new_parser()
        assert len(p.parse_many(lines)) == 2 and p.counters.lines == 2
    # a caller's line with a newline inside stays one line (the reference path takes it whole)
    p = new_parser()
    assert p.parse_many([f"{ok}\ninner", ok]) == [new_parser().parse_line(ok)]
    assert p.counters.lines == 2


@pytest.mark.parametrize(
    ("regex", "want"),
    [
        (r"a\sb", r"a[^\S\n]b"),
        (r"a\s*$", r"a[^\S\n]*$"),
        (r'"(?P<address>[^"]*)"', r'"(?P<address>[^"\n]*)"'),
        (r"[^]x]", r"[^]x\n]"),
        (r"[\s,]", r"(?:(?!\n)[\s,])"),
        (r"[\x00-\x7f]", None),
        (r"[a-z]\W\D", r"(?:(?!\n)[a-z])[^\w\n][^\d\n]"),
        (r"[abc]\S+\.", r"[abc]\S+\."),
        (r"a\nb", None),
        (r"(?s)a.*b", None),
    ],
)
def test_single_line_regex(regex: str, want: str | None) -> None:
    if want is None:
        with pytest.raises(ValueError):
            single_line_regex(regex)
        return
    got = single_line_regex(regex)
    assert got == want
    line = 'xa b,"q"]z'
    assert [m.span() for m in re.finditer(regex, line)] == [m.span() for m in re.finditer(got, line)]
    assert "\n" not in "".join(m.group() for m in re.finditer(got, 'a \n b\n"\n"\n,\n'))


def test_shipped_patterns_match_the_same_on_a_line_after_the_rewrite() -> None:
    for pattern in load_patterns().patterns():
        plain, bound = re.compile(pattern.regex), re.compile(single_line_regex(pattern.regex))
        for sample in [s.line for s in pattern.samples] + list(pattern.negative):
            for start in range(len(sample)):
                a, b = plain.match(sample, start), bound.match(sample, start)
                assert (a and a.groupdict()) == (b and b.groupdict()), (pattern.id, sample, start)


@pytest.mark.parametrize(
    ("regex", "want"),
    [
        (r"a(?:b)?c", r"a(?:b|)c"),
        (r"(?P<port>\d+)?x", r"(?:(?P<port>\d+)|)x"),
        (r"(?:a(?: b)?)??c", r"(?:|a(?: b|))c"),
        (r"(?:a|b)?", r"(?:a|b|)"),
        (r"[(?:]?\(?:x\)?", r"[(?:]?\(?:x\)?"),
        (r"(?=a)?b", r"(?=a)?b"),
        (r"a(?:b)?+c", r"a(?:b)?+c"),
        (r"(?:x(?P<n>y)?)+", r"(?:x(?:(?P<n>y)|))+"),
        (r"(?#a (b)x(?:y)?", r"(?#a (b)x(?:y|)"),
    ],
)
def test_branch_optionals(regex: str, want: str) -> None:
    got = branch_optionals(regex)
    assert got == want
    for text in ("", "abc", "ac", "x", "12x", "a bc", "xyxy", "(?:x)", "b", "ab"):
        for a, b in zip(re.finditer(regex, text), re.finditer(got, text), strict=True):
            assert (a.span(), a.groups(), a.lastindex) == (b.span(), b.groups(), b.lastindex)


def test_the_chunk_regex_matches_each_corpus_line_as_the_unrewritten_one_does() -> None:
    rx, _ = default_compiled().chunk_regex()
    plain = re.compile(rx.pattern.replace("|)", ")?"))  # every rewritten optional back as it was
    assert plain.pattern != rx.pattern and plain.groupindex == rx.groupindex
    text = "\n".join(line.replace("\n", " ") for line in corpus()) + "\n"
    got = [(m.span(), m.lastindex, m.groups()) for m in rx.finditer(text)]
    assert got == [(m.span(), m.lastindex, m.groups()) for m in plain.finditer(text)]


def test_a_pattern_that_needs_a_newline_is_refused_at_load(tmp_path: object) -> None:
    raw = {"id": "x-newline", "kind": "other", "regex": r"foo\nbar"}
    with pytest.raises(PatternError, match="within one line"):
        _load_pattern(tmp_path, "sshd", 0, raw)  # type: ignore[arg-type]


def test_the_compiled_patterns_are_shared_and_the_clock_is_injected() -> None:
    p = LogParser(clock=lambda: NOW)
    q = LogParser(clock=lambda: NOW)
    assert p._chunk is q._chunk  # compiled once per process
