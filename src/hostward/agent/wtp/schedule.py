"""Scheduled unprotected windows: planned update periods in server-local time.

Rules (product notes §6): at most 5 periods a day, each ≥5 minutes and <24 hours, within one day
(no midnight crossing), non-overlapping and at least 5 minutes apart except where one period
starts at 00:00 or ends at 23:59; weekdays 1 (Monday) .. 7 (Sunday); an on/off switch.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from datetime import datetime

from hostward.agent.errors import AgentError

MAX_WINDOWS = 5
MIN_MINUTES = 5
MIN_GAP_MINUTES = 5
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class ScheduleError(AgentError):
    code = "wtp_invalid_schedule"


@dataclass(frozen=True)
class Window:
    """One unprotected period ``start``..``end`` (``HH:MM``, end exclusive)."""

    start: str
    end: str

    def minutes(self) -> tuple[int, int]:
        return _minutes(self.start, "start"), _minutes(self.end, "end")


@dataclass
class Schedule:
    enabled: bool = False
    windows: list[Window] = field(default_factory=list)
    weekdays: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])


def _minutes(value: str, what: str) -> int:
    m = _HHMM.match(value)
    if not m:
        raise ScheduleError(f"{what} {value!r}: expected HH:MM (00:00..23:59)")
    return int(m.group(1)) * 60 + int(m.group(2))


def validate_schedule(schedule: Schedule) -> Schedule:
    """Raise ``ScheduleError`` naming the offending window; returns ``schedule``."""
    if len(schedule.windows) > MAX_WINDOWS:
        raise ScheduleError(f"at most {MAX_WINDOWS} windows per day, got {len(schedule.windows)}")
    if any(d not in range(1, 8) for d in schedule.weekdays) or len(set(schedule.weekdays)) != len(
        schedule.weekdays
    ):
        raise ScheduleError(f"weekdays {schedule.weekdays}: each must be 1 (Monday) .. 7 (Sunday), once")
    spans = []
    for w in schedule.windows:
        start, end = w.minutes()
        if end <= start:
            raise ScheduleError(f"window {w.start}-{w.end}: must end after it starts on the same day")
        if end - start < MIN_MINUTES:
            raise ScheduleError(f"window {w.start}-{w.end}: shorter than {MIN_MINUTES} minutes")
        spans.append((start, end, w))
    spans.sort(key=lambda s: s[0])
    for (s1, e1, w1), (s2, _e2, w2) in itertools.pairwise(spans):
        if s2 < e1:
            raise ScheduleError(f"windows {w1.start}-{w1.end} and {w2.start}-{w2.end} overlap")
        # the gap rule exempts periods anchored at the ends of the day
        if s2 - e1 < MIN_GAP_MINUTES and not (s1 == 0 or w2.end == "23:59"):
            raise ScheduleError(
                f"windows {w1.start}-{w1.end} and {w2.start}-{w2.end} are less than "
                f"{MIN_GAP_MINUTES} minutes apart"
            )
    return schedule


def is_unprotected(now_local: datetime, schedule: Schedule) -> bool:
    """Whether ``now_local`` (server-local wall time) falls in a scheduled unprotected window."""
    if not schedule.enabled or now_local.isoweekday() not in schedule.weekdays:
        return False
    minute = now_local.hour * 60 + now_local.minute
    for w in schedule.windows:
        start, end = w.minutes()
        # 23:59 as an end means "until midnight"
        if start <= minute < end or (w.end == "23:59" and minute == 23 * 60 + 59):
            return True
    return False
