"""What the login-log parser produces: event rows, the ``LoginEvent`` view of a row, and its counters.

The hot path hands out plain tuples (``LoginRow``) in ``LoginEvent``'s field order rather than
``LoginEvent`` objects: a plain tuple of strings and numbers is built by one bytecode and is dropped
from the cyclic garbage collector's lists at its first collection, whereas every instance of a tuple
subclass stays tracked and is walked again by each full collection — with a million rows in flight that
cost more than the parsing. Consumers read a row by unpacking it or through the index constants below;
``LoginEvent`` has the same layout (so a ``LoginEvent`` is a ``LoginRow`` and compares equal to the
row with the same values) and adds names for code that is not on the hot path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

# kind, service, user, address, method, timestamp, pattern, port, counting
LoginRow = tuple[str, str, "str | None", "str | None", "str | None", "float | None", str, "int | None", str]

KIND: Final = 0
SERVICE: Final = 1
USER: Final = 2
ADDRESS: Final = 3
METHOD: Final = 4
TIMESTAMP: Final = 5
PATTERN: Final = 6
PORT: Final = 7
COUNTING: Final = 8


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


def as_event(row: LoginRow) -> LoginEvent:
    """The named view of a row (a row that already is a ``LoginEvent`` is returned as it is)."""
    return row if isinstance(row, LoginEvent) else LoginEvent._make(row)


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
