"""When a server's daily scan runs: a slot in the scan window, in the server's local time.

Pure time arithmetic, no database: the window is ``[start_hour, start_hour + hours)`` local time, the
server's slot is ``offset_s`` seconds into it (clamped into the window), and local time is UTC plus the
offset the agent reports (``utc_offset_minutes``). Using the reported offset instead of a zone name
keeps the computation free of DST ambiguity; the offset is refreshed by every heartbeat, and the next
slot is computed again after each scan, so a DST change shifts the slot by at most one day's scan.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from hostward.core.clock import as_utc


def window_seconds(window_hours: int) -> int:
    return max(1, window_hours) * 3600


def clamp_offset(offset_s: int, window_hours: int) -> int:
    """An offset outside the window lands on its nearest edge (the window may have been shortened)."""
    return min(max(offset_s, 0), window_seconds(window_hours) - 1)


def random_offset(window_hours: int) -> int:
    """A per-server offset spreading a fleet's daily scans over the window."""
    return secrets.randbelow(window_seconds(window_hours))


def next_daily_scan_at(
    after: datetime,
    *,
    utc_offset_minutes: int,
    window_start_hour: int,
    window_hours: int,
    offset_s: int,
) -> datetime:
    """The first daily-scan slot strictly after ``after`` (aware UTC in, aware UTC out).

    A window that crosses local midnight (e.g. 22:00 + 4 h) puts late slots on the next local day.
    """
    if not 0 <= window_start_hour <= 23:
        raise ValueError("window_start_hour must be 0..23")
    after = as_utc(after)
    to_local = timedelta(minutes=utc_offset_minutes)
    into_window = timedelta(hours=window_start_hour, seconds=clamp_offset(offset_s, window_hours))
    local_day = (after + to_local).date()
    # The slot of the previous local day can still be ahead (windows crossing midnight); the next
    # day's slot always is, so one of the three candidates qualifies.
    candidates = []
    for days in (-1, 0, 1):
        day = local_day + timedelta(days=days)
        local_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        slot = local_midnight + into_window - to_local
        if slot > after:
            candidates.append(slot)
    return min(candidates)
