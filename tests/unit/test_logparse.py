"""LogParser behaviour beyond the pattern samples: both paths agree, bad input, timestamps, journald."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from hostward.agent.detectors.logevents import ADDRESS, KIND, PATTERN, TIMESTAMP, LoginEvent
from hostward.agent.detectors.logparse import LogParser, normalise_address
from hostward.agent.detectors.logpatterns import load_patterns

NOW = datetime(2025, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def new_parser(**kw: object) -> LogParser:
    return LogParser(tz=UTC, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


def corpus() -> list[str]:
    """Every sample line, plus mutations: cut short, CRLF, another program, noise, odd headers."""
    rnd = random.Random(7)
    lines: list[str] = []
    for pattern in load_patterns().patterns():
        lines += [s.line for s in pattern.samples] + list(pattern.negative)
    base = list(lines)
    for line in base:
        lines.append(line[: rnd.randint(0, len(line))])
        lines.append(line + "\r\n")
        lines.append(line.replace("sshd[", "sshd-session[").replace("web01 ", "web01.example.org "))
        lines.append(line.replace("sshd[", "notsshd["))
        lines.append(line.replace(" from ", " from  "))
        lines.append(line[:16] + line[16:].replace(" ", "  ", 1))
    lines += [
        "Nov 24 13:57:44 web01 CRON[1]: pam_unix(cron:session): session opened for user root(uid=0)",
        "Nov 24 13:57:44 web01 kernel: [1.000] [UFW BLOCK] IN=eth0 SRC=203.0.113.1",
        "Nov 24 13:57:44 web01 sudo:   alice : TTY=pts/0 ; PWD=/ ; USER=root ; COMMAND=/bin/true",
        "Nov 24 13:57:44 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "Foo 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "Nov 99 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "Nov 24 25:61:99 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "2025-13-40T99:99:99Z web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "Nov 24 13:57:44 web01 sshd[x]: Failed password for root from 203.0.113.7 port 1 ssh2",
        "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 999.1.1.1 port 1 ssh2",
        "",
        "\x00\x01\x02",
        "Nov 24 13:57:44 web01 sshd[1]:",
    ]
    return lines


def test_fast_path_and_reference_path_give_the_same_events() -> None:
    for line in corpus():
        fast = new_parser().parse_line(line)
        slow = new_parser().parse_one(line)
        assert fast == slow, line


def test_counters_account_for_every_line_the_same_way_on_both_paths() -> None:
    lines = corpus()
    fast = new_parser()
    fast.parse_many(lines)
    slow = new_parser()
    for line in lines:
        slow.parse_one(line)
    assert fast.counters == slow.counters
    assert fast.counters.lines == len(lines)


def test_typical_lines_are_classified() -> None:
    p = new_parser()
    events = p.parse_many(
        [
            "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2\n",
            "Nov 24 13:57:44 web01 sshd[1]: Server listening on 0.0.0.0 port 22.\n",
            "Nov 24 13:57:44 web01 CRON[2]: (root) CMD (true)\n",
            "this is no log line at all\n",
        ]
    )
    assert [e[PATTERN] for e in events] == ["sshd-failed-password"]
    c = p.counters
    assert (c.events, c.unmatched, c.skipped, c.unparsed) == (1, 1, 1, 1)


def test_binary_garbage_and_enormous_lines_never_raise_and_are_counted() -> None:
    rnd = random.Random(1)
    p = new_parser()
    garbage = [
        bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 400))).decode("utf-8", "replace")
        for _ in range(300)
    ]
    huge = (
        "Nov 24 13:57:44 web01 sshd[1]: Failed password for "
        + "A" * 1_048_576
        + " from 203.0.113.7 port 1 ssh2"
    )
    huge_bare = "x" * 1_048_576
    events = p.parse_many([*garbage, huge, huge_bare])
    assert all(e[ADDRESS] is None or e[KIND] != "failure" for e in events)
    c = p.counters
    assert c.oversize == 2
    assert c.lines == len(garbage) + 2
    assert p.parse_line(huge) is None


def test_a_user_name_cannot_inject_another_address() -> None:
    line = "Nov 24 13:57:44 web01 sshd[1]: Invalid user x from 6.6.6.6 port 1 from 203.0.113.7 port 22"
    event = new_parser().parse_line(line)
    assert event is not None
    assert event.address == "203.0.113.7"
    assert event.user == "x from 6.6.6.6 port 1"


def test_invalid_address_is_recognised_but_carries_no_address() -> None:
    p = new_parser()
    event = p.parse_line(
        "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from bad.example port 1 ssh2"
    )
    assert event is not None and event.address is None
    assert p.counters.invalid_address == 1


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::2]", "2001:db8::2"),
        ("fe80::1%eth0", "fe80::1"),
        ("192.0.2.300", None),
        ("host.example", None),
        ("", None),
    ],
)
def test_normalise_address(text: str, want: str | None) -> None:
    assert normalise_address(text) == want


def test_year_is_inferred_across_new_year() -> None:
    jan2 = datetime(2026, 1, 2, 8, 0, tzinfo=UTC).timestamp()
    p = LogParser(tz=UTC, clock=lambda: jan2)
    dec = p.parse_line("Dec 31 23:59:59 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2")
    jan = p.parse_line("Jan  1 00:00:01 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2")
    assert dec is not None and jan is not None
    assert dec.when == datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert jan.when == datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_february_29_outside_a_leap_year_belongs_to_the_last_leap_year() -> None:
    march_2025 = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    p = LogParser(tz=UTC, clock=lambda: march_2025)
    event = p.parse_line(
        "Feb 29 10:00:00 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2"
    )
    assert event is not None and event.when == datetime(2024, 2, 29, 10, 0, tzinfo=UTC)


def test_syslog_time_is_read_in_the_given_zone() -> None:
    berlin = LogParser(tz=ZoneInfo("Europe/Berlin"), clock=lambda: NOW)
    event = berlin.parse_line(
        "Jul 14 12:00:00 web01 sshd[1]: Failed password for root from 203.0.113.7 port 1 ssh2"
    )
    assert event is not None and event.when == datetime(2025, 7, 14, 10, 0, tzinfo=UTC)


def test_rfc3339_and_bsd_lines_in_one_source() -> None:
    p = new_parser()
    events = p.parse_many(
        [
            "2025-11-24T13:57:44.123456+00:00 web01 sshd[1]: Failed password for root from 192.0.2.7 port 1",
            "Nov 24 13:57:45 web01 sshd[1]: Failed password for root from 203.0.113.7 port 2 ssh2",
            "2025-11-24T14:57:46+01:00 web01 sshd[1]: Failed password for root from 203.0.113.7 port 3 ssh2",
        ]
    )
    assert [e[TIMESTAMP] for e in events] == [
        datetime(2025, 11, 24, 13, 57, 44, 123456, tzinfo=UTC).timestamp(),
        datetime(2025, 11, 24, 13, 57, 45, tzinfo=UTC).timestamp(),
        datetime(2025, 11, 24, 13, 57, 46, tzinfo=UTC).timestamp(),
    ]


def test_service_hint_limits_bare_lines() -> None:
    line = "Failed password for root from 203.0.113.7 port 1 ssh2"
    assert new_parser(service="sshd").parse_line(line) is not None
    assert new_parser(service="auto").parse_line(line) is not None
    assert new_parser(service="vsftpd").parse_line(line) is None
    with pytest.raises(ValueError, match="unknown service"):
        LogParser(service="telnetd")


def test_journald_messages() -> None:
    p = new_parser()
    ts = datetime(2025, 11, 24, 13, 57, 44, tzinfo=UTC).timestamp()
    event = p.parse_message("sshd-session", "Failed password for root from 2001:db8::1 port 22 ssh2", ts)
    assert event is not None and (event.address, event.timestamp, event.service) == (
        "2001:db8::1",
        ts,
        "sshd",
    )
    pam = p.parse_message(
        "sshd",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.9",
        ts,
    )
    assert pam is not None and pam.counting == "followup"
    assert p.parse_message("systemd", "Started Session 1 of User root.", ts) is None
    assert p.parse_message("sshd", "x" * 100_000, ts) is None
    c = p.counters
    assert (c.events, c.skipped, c.oversize) == (2, 1, 1)


def test_line_numbers_for_logtest() -> None:
    ok = "Nov 24 13:57:44 web01 sshd[1]: Invalid user a from 203.0.113.7 port 1"
    bare = "Failed password for root from 203.0.113.8 port 2 ssh2"  # the reference path's line
    lines = ["noise", ok, "noise", "", bare + "\r", "x" * 300, ok, "Nov 24 13:57:44 web01 CRON[2]: x"]
    p = new_parser(max_line=200)
    numbered = p.parse_numbered("\n".join(lines))
    assert [n for n, _ in numbered] == [2, 5, 7]
    assert [e for _, e in numbered] == [new_parser().parse_line(lines[n - 1]) for n in (2, 5, 7)]
    assert (p.counters.lines, p.counters.oversize) == (len(lines), 1)


def test_rows_are_plain_tuples_with_the_layout_of_login_event() -> None:
    line = "Nov 24 13:57:44 web01 sshd[1]: Invalid user a from 203.0.113.7 port 1\n"
    row = new_parser().parse_text(line)[0]
    assert type(row) is tuple and len(row) == len(LoginEvent._fields)
    event = LoginEvent._make(row)
    assert (event.kind, event.user, event.address, event.port) == ("failure", "a", "203.0.113.7", 1)


def test_a_port_of_thousands_of_digits_is_no_port_and_no_crash() -> None:
    # int() refuses more than 4,300 digits; the line is still a failure from its address
    line = "Nov 24 13:57:44 web01 sshd[1]: Failed password for root from 203.0.113.7 port " + "9" * 5000
    fast, slow = new_parser().parse_text(line + "\n"), new_parser().parse_one(line)
    assert fast == [slow] and slow is not None
    assert (slow.address, slow.port) == ("203.0.113.7", None)
