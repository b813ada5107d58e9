"""The C chunk scanner (``_logscan``) against its pure-Python twin (``LogParser._parse_chunk``).

Both paths get the same text; rows, line numbers and every counter must be identical — on the annotated
samples of the shipped patterns, a generated auth log, hypothesis-made garbage mixed with real lines,
non-ASCII text (declined by the scanner), CRLF, cut-short and over-long lines, and empty text.
"""

from __future__ import annotations

import importlib.util
import itertools
import re
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostward.agent.detectors.logcompile import CompiledPatterns
from hostward.agent.detectors.logparse import LogParser
from hostward.agent.detectors.logpatterns import load_patterns
from hostward.agent.detectors.logscanner import make_scanner, native_scanner, scanner_regex
from tests.conftest import need

NOW = 1_764_590_400.0  # 2025-12-01 12:00 UTC
BENCH = Path(__file__).resolve().parents[2] / "bench"
PATTERNS = load_patterns()
SAMPLES = [s.line for p in PATTERNS.patterns() for s in p.samples if s.hint is None]
NEGATIVES = [n for p in PATTERNS.patterns() for n in p.negative]
HINTED = [(s.hint, s.line) for p in PATTERNS.patterns() for s in p.samples if s.hint is not None]

# lines that take every branch of the scanner: each timestamp form and its fallbacks, ports that int()
# refuses or makes big, addresses that are no IP, programs we do not watch, no syslog header at all
EDGE_LINES = [
    "Nov 24 13:57:44 host sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
    "Nov 24 13:57:44 host sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
    "Nov  4 03:07:59 host sshd[2]: Invalid user a b c from ::ffff:198.51.100.7 port 2222",
    "Feb 30 10:00:00 host sshd[3]: Invalid user x from 198.51.100.8 port 1",
    "Feb 29 10:00:00 host sshd[3]: Invalid user x from 198.51.100.8 port 1",
    "Nov 24 25:61:61 host sshd[3]: Invalid user y from 198.51.100.9 port 0000022",
    "Nov 24 13:57:99 host sshd[3]: Invalid user y from 198.51.100.9 port 99999999999999999999999",
    "Nov 24 13:57:60 host sshd[3]: Invalid user y from 198.51.100.9 port " + "9" * 5000,
    "2025-11-24T13:57:44.123456+01:00 host sshd[4]: Invalid user z from fe80::1%eth0 port 7",
    "2025-11-24T13:57:44 host sshd[4]: Invalid user z from fe80::1%eth0 port 7",
    "2025-13-45T99:99:99Z host sshd[4]: Invalid user z from not-an-ip port 7",
    "Nov 24 13:57:44 host sshd[5]: Connection closed by authenticating user root 2001:db8::1 port 9"
    " [preauth]",
    "Nov 24 13:57:44 host sshd[6]: Server listening on 0.0.0.0 port 22.",
    "Nov 24 13:57:44 host CRON[7]: pam_unix(cron:session): session opened for user root",
    "Nov 24 13:57:44 host sshd[8]: User bob from 192.0.2.4 not allowed because not listed in AllowUsers",
    "Nov 24 13:57:44 host sudo: pam_unix(sudo:auth): authentication failure; logname=a uid=1 euid=0 "
    "tty=/dev/pts/0 ruser=alice rhost=192.0.2.5  user=root",
    "Nov 24 13:57:44 host sshd[9]: Accepted publickey for git from 192.0.2.6 port 4 ssh2: ED25519 SHA256:x",
    "Nov 24 13:57:44 host dropbear[10]: Bad password attempt for 'root' from 192.0.2.7:5",
    'Nov 24 13:57:44 host vsftpd[11]: [ftp] FAIL LOGIN: Client "192.0.2.8"',
    "Nov 24 13:57:44 host proftpd[12]: host (1.2.3.4[1.2.3.4]) - USER bob (Login failed): Incorrect",
    "Nov 24 13:57:44 host mysqld[13]: Access denied for user 'root'@'192.0.2.9' (using password: YES)",
    "Nov 24 13:57:44 host sshd: ",
    "Nov 24 13:57:44 host",
    "Nov 24 13:57:44",
    "sshd[1]: Failed password for root from 203.0.113.9 port 22 ssh2",
    "Failed password for root from 203.0.113.9 port 22 ssh2",
    "garbage \x00\x01\x7f binary",
    "",
    "   ",
]


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LogParser, LogParser]]:
    yield make_pair(monkeypatch)


def make_pair(
    monkeypatch: pytest.MonkeyPatch, compiled: CompiledPatterns | None = None, **options: Any
) -> tuple[LogParser, LogParser]:
    """(native, pure) parsers with the same settings."""
    need("native")
    options = {"tz": UTC, "clock": lambda: NOW, **options}
    monkeypatch.delenv("HOSTWARD_NO_NATIVE", raising=False)
    fast = LogParser(compiled, **options)
    monkeypatch.setenv("HOSTWARD_NO_NATIVE", "1")
    pure = LogParser(compiled, **options)
    monkeypatch.delenv("HOSTWARD_NO_NATIVE")
    assert fast.native and not pure.native
    return fast, pure


def same(fast: LogParser, pure: LogParser, text: str) -> list[Any]:
    """Both paths on ``text`` (parse_text, then parse_numbered); asserts equal rows and counters."""
    rows, want = fast.parse_text(text), pure.parse_text(text)
    assert rows == want
    assert [type(r) for r in rows] == [type(r) for r in want]
    assert fast.parse_numbered(text) == pure.parse_numbered(text)
    assert fast.counters == pure.counters
    return rows


def scanned(text: str) -> bool:
    """True when the C scanner takes ``text`` itself (rather than declining it to the pure path)."""
    parser = LogParser(tz=UTC, clock=lambda: NOW)
    scanner = native_scanner(parser._c)
    counts = scanner.scan(
        text,
        [],
        None,
        parser._addr_cache,
        parser._time.minute_cache,
        parser._time.bsd,
        parser._time.iso,
        parser.parse_one,
    )
    return counts is not None


def test_samples_one_chunk_and_line_by_line(pair: tuple[LogParser, LogParser]) -> None:
    fast, pure = pair
    text = "\n".join(SAMPLES + NEGATIVES) + "\n"
    assert text.isascii() and scanned(text)
    rows = same(fast, pure, text)
    assert len(rows) >= len(SAMPLES)
    for line in SAMPLES + NEGATIVES:
        assert fast.parse_line(line) == pure.parse_line(line)
        assert fast.parse_many([line, line]) == pure.parse_many([line, line])
    assert fast.counters == pure.counters


def test_hinted_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    for hint, line in HINTED:
        fast, pure = make_pair(monkeypatch, service=hint)
        assert same(fast, pure, line + "\n"), line


def test_edge_lines(pair: tuple[LogParser, LogParser]) -> None:
    fast, pure = pair
    text = "\n".join(EDGE_LINES) + "\n"
    assert scanned(text)
    rows = same(fast, pure, text)
    assert any(r[7] is not None and r[7] > 2**64 for r in rows)  # a big port stays a big int
    assert fast.counters.invalid_address >= 1 and fast.counters.unparsed >= 5
    for line in EDGE_LINES:  # and each line alone, without its newline (a cut-short last line)
        same(fast, pure, line)


def test_generated_auth_log(pair: tuple[LogParser, LogParser], tmp_path: Path) -> None:
    authlog = _bench_module("_authlog")
    log = tmp_path / "auth.log"
    truth = authlog.generate(log, 30_000)
    text = log.read_text()
    assert scanned(text)
    fast, pure = pair
    # in pieces as the tailer hands them over, cut anywhere, the last line cut short
    cut = [0, 1, 4096, 77_777, 1_000_000, len(text) - 5, len(text)]
    rows = [row for a, b in itertools.pairwise(cut) for row in same(fast, pure, text[a:b])]
    # parse_text and parse_numbered each saw every line; each inner cut made one line two
    assert fast.counters.lines == 2 * (truth.lines + len(cut) - 2)
    assert sum(1 for r in rows if r[0] == "failure") > 10_000


def test_declined_chunks_are_parsed_by_the_pure_path(pair: tuple[LogParser, LogParser]) -> None:
    fast, pure = pair
    base = "\n".join(EDGE_LINES[:12])
    for extra in (
        "Nov 24 13:57:44 host sshd[1]: Invalid user jos\u00e9 from 192.0.2.1 port 22",  # non-ASCII
        "Nov 24 13:57:44 host sshd[1]: Invalid user a\x1cb from 192.0.2.1 port 22",  # \s to Python only
        "Nov 24 13:57:44 host sshd[1]: Invalid user \U0001f600 from 192.0.2.1 port \u0663\u0664",
    ):
        text = f"{base}\n{extra}\n{base}\n"
        assert not scanned(text)
        rows = same(fast, pure, text)
        assert len(rows) >= 20


def test_crlf_long_lines_empty_text(pair: tuple[LogParser, LogParser]) -> None:
    fast, pure = pair
    assert same(fast, pure, "") == []
    assert same(fast, pure, "\n\n\n") == []
    lines = [*EDGE_LINES[:3], "Nov 24 13:57:44 host sshd[1]: Invalid user " + "u" * 20_000 + " from 1.2.3.4"]
    same(fast, pure, "\r\n".join(lines) + "\r\n")
    same(fast, pure, "\n".join(lines * 3))
    assert fast.counters.oversize == pure.counters.oversize == 2 * (1 + 3)  # parse_text + parse_numbered


def test_long_lines_under_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, pure = make_pair(monkeypatch, max_line=1_000_000)
    long_user = "x" * 200_000
    text = (
        f"Nov 24 13:57:44 host sshd[1]: Failed password for {long_user} from 1.2.3.4 port 22 ssh2\n"
        f"Nov 24 13:57:44 host sshd[1]: Invalid user {' '.join(['a'] * 50_000)} from 1.2.3.4 port 5\n"
        f"Nov 24 13:57:44 host sshd[1]: Connection closed by {'1' * 300_000} port 5 [preauth]\n"
    )
    rows = same(fast, pure, text)
    assert rows[0][2] == long_user


_LINE_PARTS = st.sampled_from(EDGE_LINES + SAMPLES[:40])
_JUNK = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=300)
_UNICODE = st.text(max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.one_of(_LINE_PARTS, _JUNK, _UNICODE), max_size=30), cut=st.integers(0, 40))
def test_hypothesis_garbage_mixed_with_real_lines(
    monkeypatch: pytest.MonkeyPatch, parts: list[str], cut: int
) -> None:
    fast, pure = make_pair(monkeypatch)
    text = "\n".join(parts)
    same(fast, pure, text)
    same(fast, pure, text[: len(text) - cut])
    # ASCII junk with a real line glued on either side: the scanner's own path
    ascii_text = "\n".join(p for p in parts if p.isascii())
    same(fast, pure, ascii_text + "\n" + EDGE_LINES[0] + "\n")


def test_threads_share_one_scanner(pair: tuple[LogParser, LogParser]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, pure = pair
    text = "\n".join(EDGE_LINES * 200) + "\n"
    want = pure.parse_text(text)

    def run(_: int) -> list[Any]:
        return LogParser(tz=UTC, clock=lambda: NOW).parse_text(text)

    with ThreadPoolExecutor(4) as pool:
        assert all(got == want for got in pool.map(run, range(16)))


def test_scanner_regex_rewrites_and_refusals() -> None:
    def rewrite(pattern: str, keep: set[str]) -> Any:
        return scanner_regex(re.compile(pattern + "[^\\n]*"), keep)

    got = rewrite(r"(?m)^(?:(?P<a>x)|(?P<b>y)(?P<c>z){,3})\Z", {"a", "b", "c"})
    assert got is not None
    assert got.pattern == r"(?m)^(?|(?:(x)(*:1))|(?:(y)(*:2))(?:(z)(*:3)){0,3})\z"
    assert got.captures == 2 and got.numbers == {"a": 1, "b": 1, "c": 2}
    dropped = rewrite(r"(?P<a>x)(?P<b>y)", {"b"})
    assert dropped is not None and dropped.pattern == "(?:(?:x)(*:1))(?:(y)(*:2))" and dropped.captures == 1
    vt = rewrite(r"(?P<a>\v[\v\\v])", {"a"})
    assert vt is not None and vt.pattern == r"(?:(\x0b[\x0b\\v])(*:1))"
    assert rewrite(r"(x)", set()) is None  # unnamed capture
    assert rewrite(r"(?P<a>x)\1", {"a"}) is None
    assert rewrite(r"(?=(?P<a>x))", {"a"}) is None  # a group inside a lookaround
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Python warns that it may read it so one day
        assert rewrite(r"[[:alpha:]]", set()) is None
    assert rewrite(r"(?x: a )", set()) is None
    assert scanner_regex(re.compile("abc"), set()) is None  # not the chunk regex's layout


def test_a_pcre2_limit_declines_the_chunk_to_the_pure_path(pair: tuple[LogParser, LogParser]) -> None:
    fast, pure = pair
    limited = make_scanner(fast._c, match_limit=1)
    text = "\n".join(EDGE_LINES) + "\n"
    assert limited.scan(text, [], None, {}, {}, None, None, None) is None  # nothing appended or called
    fast._scanner = limited
    assert fast.native
    same(fast, pure, text)


def test_scanner_refuses_bad_construction() -> None:
    need("native")
    from hostward.agent.detectors import _logscan

    with pytest.raises(RuntimeError, match="not initialised"):
        _logscan.Scanner.__new__(_logscan.Scanner).scan("x", [], None, {}, {}, None, None, None)
    with pytest.raises(ValueError, match="cannot compile"):
        _logscan.Scanner("(?m)^(", 0, [0, 3])
    with pytest.raises(ValueError, match="capture groups"):
        _logscan.Scanner("(?m)^(x)(*:1)", 0, [0, 3])
    with pytest.raises(ValueError, match="bad table code"):
        _logscan.Scanner("(?m)^(x)(*:1)", 1, [0, 7])
    with pytest.raises(ValueError, match="out of range"):
        _logscan.Scanner("(?m)^(x)(*:1)", 1, [0, ("k", "s", "p", "c", (1, 2, 0, 0, 1))])
    scanner = _logscan.Scanner("(?m)^(x)(*:1)", 1, [0, ("k", "s", "p", "c", (1, 0, 0, 0, 1))])
    with pytest.raises(RuntimeError, match="already"):
        scanner.__init__("(?m)^(x)(*:1)", 1, [0, 3])  # type: ignore[misc]
    # a line the regex does not take (no catch-all here): declined, not lost
    assert scanner.scan("x\ny\n", [], None, {}, {}, None, None, None) is None


CUSTOM = """
service: sshd
programs: [sshd]
patterns:
  - id: x-failed
    kind: failure
    counting: attempt
    regex: 'Failed for (?P<user>\\S{,8}) from (?P<address>\\S+?)(?: port (?P<port>\\d+))?\\Z'
    samples:
      - line: 'Failed for bob from 192.0.2.1 port 22'
        expect: {user: bob}
    negative: ['nothing']
  - id: x-other
    kind: other
    regex: 'Bye(?P<method>[!?])*'
    samples:
      - line: 'Bye!?'
        expect: {method: '?'}
    negative: ['nothing']
"""


def test_custom_patterns_with_rewritten_constructs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    directory = tmp_path / "patterns"
    directory.mkdir()
    (directory / "sshd.yaml").write_text(CUSTOM, encoding="utf-8")
    compiled = CompiledPatterns(load_patterns(directory))
    fast, pure = make_pair(monkeypatch, compiled)
    # in a chunk \Z is the end of the chunk: only a last line can match x-failed; {,8} caps the user
    lines = [
        "Nov 24 13:57:44 h sshd[1]: Failed for bob from 192.0.2.1 port 22",
        "Nov 24 13:57:44 h sshd[1]: Bye!!? now",
        "Nov 24 13:57:44 h sshd[1]: Bye now",
        "Nov 24 13:57:44 h sshd[1]: Failed for bobbobbobbob from 192.0.2.1 port 22",
        "Nov 24 13:57:44 h sshd[1]: Failed for bob from 192.0.2.1",
    ]
    rows = same(fast, pure, "\n".join(lines) + "\n")
    # a repeated group keeps its last repetition; none at all sends the line the reference path
    assert [(r[6], r[2], r[4]) for r in rows] == [
        ("x-other", None, "?"),
        ("x-other", None, None),
        ("x-failed", "bob", None),
    ]
    assert same(fast, pure, lines[3] + "\n") == []


def _bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
