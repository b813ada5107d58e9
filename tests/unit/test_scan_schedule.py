"""The daily scan slot: server-local window, per-server offset, midnight crossing, clamping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from hostward.manager.scans.schedule import clamp_offset, next_daily_scan_at, random_offset


def slot(after: datetime, *, tz_min: int = 0, start: int = 0, hours: int = 4, offset: int = 0) -> datetime:
    return next_daily_scan_at(
        after, utc_offset_minutes=tz_min, window_start_hour=start, window_hours=hours, offset_s=offset
    )


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def test_default_window_utc_server() -> None:
    assert slot(utc(2024, 3, 1, 12, 0)) == utc(2024, 3, 2, 0, 0)
    assert slot(utc(2024, 3, 1, 12, 0), offset=3723) == utc(2024, 3, 2, 1, 2, 3)
    # Before today's slot: today's slot.
    assert slot(utc(2024, 3, 1, 0, 30), offset=3600) == utc(2024, 3, 1, 1, 0)


def test_slot_is_strictly_after() -> None:
    assert slot(utc(2024, 3, 1, 1, 0), offset=3600) == utc(2024, 3, 2, 1, 0)
    assert slot(utc(2024, 3, 1, 1, 0, 1), offset=3600) == utc(2024, 3, 2, 1, 0)


def test_server_local_time_east_of_utc() -> None:
    # UTC+8: local 00:00 is 16:00 UTC the day before.
    assert slot(utc(2024, 3, 1, 10, 0), tz_min=480) == utc(2024, 3, 1, 16, 0)
    assert slot(utc(2024, 3, 1, 17, 0), tz_min=480, offset=1800) == utc(2024, 3, 2, 16, 30)


def test_server_local_time_west_of_utc() -> None:
    # UTC-5: local 02:00 is 07:00 UTC.
    assert slot(utc(2024, 3, 1, 3, 0), tz_min=-300, start=2) == utc(2024, 3, 1, 7, 0)
    # 23:00 UTC is 18:00 local: the next local 02:00 is tomorrow 07:00 UTC.
    assert slot(utc(2024, 3, 1, 23, 0), tz_min=-300, start=2) == utc(2024, 3, 2, 7, 0)


def test_half_hour_offsets() -> None:
    # India, UTC+5:30: local 00:00 = 18:30 UTC the day before.
    assert slot(utc(2024, 3, 1, 12, 0), tz_min=330) == utc(2024, 3, 1, 18, 30)


def test_window_crossing_midnight() -> None:
    # Window 22:00 + 4 h, slot 3 h in: 01:00 on the NEXT local day.
    assert slot(utc(2024, 3, 1, 21, 0), start=22, offset=3 * 3600) == utc(2024, 3, 2, 1, 0)
    assert slot(utc(2024, 3, 1, 23, 30), start=22, offset=3 * 3600) == utc(2024, 3, 2, 1, 0)
    # Just after midnight the slot from the previous day's window is still ahead.
    assert slot(utc(2024, 3, 2, 0, 30), start=22, offset=3 * 3600) == utc(2024, 3, 2, 1, 0)
    assert slot(utc(2024, 3, 2, 1, 0), start=22, offset=3 * 3600) == utc(2024, 3, 3, 1, 0)
    # An early slot in the same window stays on the window's own day.
    assert slot(utc(2024, 3, 2, 0, 30), start=22, offset=600) == utc(2024, 3, 2, 22, 10)


def test_offset_beyond_window_clamps_to_its_end() -> None:
    assert clamp_offset(5 * 3600, 4) == 4 * 3600 - 1
    assert clamp_offset(-10, 4) == 0
    assert slot(utc(2024, 3, 1, 12, 0), offset=5 * 3600) == utc(2024, 3, 2, 3, 59, 59)
    assert slot(utc(2024, 3, 1, 12, 0), offset=-100) == utc(2024, 3, 2, 0, 0)


def test_whole_day_window_and_leap_day() -> None:
    assert slot(utc(2024, 2, 28, 23, 0), hours=24, offset=23 * 3600 + 1800) == utc(2024, 2, 28, 23, 30)
    assert slot(utc(2024, 2, 28, 23, 45), start=1) == utc(2024, 2, 29, 1, 0)


def test_aware_non_utc_input_is_normalised() -> None:
    after = datetime(2024, 3, 1, 20, 0, tzinfo=timezone(timedelta(hours=8)))  # 12:00 UTC
    result = slot(after)
    assert result == utc(2024, 3, 2, 0, 0)
    assert result.utcoffset() == timedelta(0)


def test_random_offset_is_inside_the_window() -> None:
    offsets = {random_offset(4) for _ in range(200)}
    assert all(0 <= o < 4 * 3600 for o in offsets)
    assert len(offsets) > 150  # spread, not a constant


@given(
    after=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ),
    tz_min=st.integers(min_value=-12 * 60, max_value=14 * 60),
    start=st.integers(min_value=0, max_value=23),
    hours=st.integers(min_value=1, max_value=24),
    offset=st.integers(min_value=-3600, max_value=30 * 3600),
)
def test_slot_properties(after: datetime, tz_min: int, start: int, hours: int, offset: int) -> None:
    result = slot(after, tz_min=tz_min, start=start, hours=hours, offset=offset)
    assert after < result <= after + timedelta(days=1)
    local = result + timedelta(minutes=tz_min)
    seconds_into_day = local.hour * 3600 + local.minute * 60 + local.second
    into_window = (seconds_into_day - start * 3600) % 86400
    assert into_window == clamp_offset(offset, hours)
    assert result.microsecond == 0
