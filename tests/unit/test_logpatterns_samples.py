"""Generated from content/logpatterns/*.yaml: one test per pattern (and per file).

Every pattern must carry at least one positive and one negative sample; each positive sample must be
parsed BY THAT PATTERN into exactly its annotation (through both parser paths); each negative sample
must not be matched by any pattern of its service. A pattern that matches nothing therefore fails.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hostward.agent.detectors.logevents import LoginEvent
from hostward.agent.detectors.logparse import LogParser
from hostward.agent.detectors.logpatterns import PatternError, PatternSpec, load_patterns

NOW = datetime(2025, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()
PATTERNS = load_patterns()
ALL = PATTERNS.patterns()
FILE_OF = {p.id: service for service, spec in PATTERNS.services.items() for p in spec.patterns}
FIELDS = ("kind", "service", "user", "address", "port", "method", "timestamp")


def parser(hint: str | None = None) -> LogParser:
    return LogParser(service=hint or "auto", tz=UTC, clock=lambda: NOW)


def as_dict(event: LoginEvent) -> dict[str, Any]:
    return {
        "kind": event.kind,
        "service": event.service,
        "user": event.user,
        "address": event.address,
        "port": event.port,
        "method": event.method,
        "timestamp": event.when,
        "pattern": event.pattern,
    }


def expected(pattern: PatternSpec, expect: dict[str, Any]) -> dict[str, Any]:
    unknown = set(expect) - set(FIELDS)
    assert not unknown, f"{pattern.id}: unknown annotation keys {sorted(unknown)}"
    out = {k: expect[k] for k in FIELDS if k in expect}
    if out.get("timestamp") is not None:
        out["timestamp"] = datetime.fromisoformat(out["timestamp"])
    if "address" in out and out["address"] is not None:
        out["address"] = str(out["address"])
    out["pattern"] = pattern.id
    return out


def test_every_service_has_a_file() -> None:
    assert set(PATTERNS.services) == {"sshd", "vsftpd", "proftpd", "pure-ftpd", "mysql", "dropbear", "pam"}


@pytest.mark.parametrize("pattern", ALL, ids=[p.id for p in ALL])
def test_pattern_has_samples(pattern: PatternSpec) -> None:
    assert pattern.samples, f"{pattern.id} has no positive sample"
    assert pattern.negative, f"{pattern.id} has no negative sample"


@pytest.mark.parametrize("pattern", ALL, ids=[p.id for p in ALL])
def test_positive_samples_parse_to_their_annotation(pattern: PatternSpec) -> None:
    for sample in pattern.samples:
        want = expected(pattern, sample.expect)
        fast = parser(sample.hint).parse_line(sample.line)
        assert fast is not None, f"{pattern.id}: not recognised: {sample.line!r}"
        got = as_dict(fast)
        assert {k: got[k] for k in want} == want, f"{pattern.id}: {sample.line!r}"
        # the reference path (per-program buckets) must agree with the one-regex fast path
        slow = parser(sample.hint).parse_one(sample.line)
        assert slow == fast, f"{pattern.id}: fast and reference paths differ on {sample.line!r}"


@pytest.mark.parametrize("pattern", ALL, ids=[p.id for p in ALL])
def test_negative_samples_match_no_pattern_of_the_service(pattern: PatternSpec) -> None:
    service = FILE_OF[pattern.id]
    own_ids = {p.id for p in PATTERNS.services[service].patterns}
    for line in pattern.negative:
        for hint in (None, service):
            event = parser(hint).parse_line(line)
            assert event is None or event.pattern not in own_ids, (
                f"{pattern.id}: negative sample matched {event.pattern if event else None}: {line!r}"
            )


@pytest.mark.parametrize("service", sorted(PATTERNS.services))
def test_samples_of_a_file_reach_every_kind_they_claim(service: str) -> None:
    spec = PATTERNS.services[service]
    kinds = {p.kind for p in spec.patterns}
    assert "failure" in kinds, f"{service}: no failure pattern"


def _write(tmp_path: Path, text: str) -> Path:
    directory = tmp_path / "patterns"
    directory.mkdir(exist_ok=True)
    (directory / "sshd.yaml").write_text(text, encoding="utf-8")
    return directory


GOOD = """
service: sshd
programs: [sshd]
patterns:
  - id: x-failed
    kind: failure
    counting: attempt
    regex: 'Failed for (?P<user>\\S+) from (?P<address>\\S+)$'
"""


def test_loader_accepts_a_minimal_file(tmp_path: Path) -> None:
    patterns = load_patterns(_write(tmp_path, GOOD))
    assert [p.id for p in patterns.patterns()] == ["x-failed"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("regex: '", "regex: '^"), "must not start with ^"),
        (("(?P<user>", "(?P<who>"), "unknown named groups"),
        (("kind: failure", "kind: oops"), "kind must be one of"),
        (("counting: attempt", "counting: sometimes"), "needs counting"),
        (("service: sshd", "service: telnet"), "service must be one of"),
        (("(?P<user>\\S+)", "(\\S+)"), "use (?:...) for unnamed groups"),
        (("regex: 'Failed", "regex: '(Failed"), "bad regex"),
    ],
)
def test_loader_rejects_bad_patterns_with_a_clear_message(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD, change
    with pytest.raises(PatternError, match=re.escape(message)) as info:
        load_patterns(_write(tmp_path, text))
    assert "sshd.yaml" in str(info.value)


def test_loader_rejects_duplicate_ids(tmp_path: Path) -> None:
    directory = _write(tmp_path, GOOD)
    (directory / "vsftpd.yaml").write_text(GOOD.replace("service: sshd", "service: vsftpd"), encoding="utf-8")
    with pytest.raises(PatternError, match="already used"):
        load_patterns(directory)
