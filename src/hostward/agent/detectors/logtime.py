"""Log timestamps to epoch seconds, with caches and year inference for syslog dates that have no year.

Syslog's traditional ``Nov 24 13:57:44`` has neither year nor zone: it is read in ``tz`` (None: the
host's local time, which is what the local syslog daemon wrote), in the current year, unless that puts
it more than a week in the future — then it is last year's (a December line read in January).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, tzinfo

_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTHS = {m: i for i, m in enumerate(_MONTH_NAMES, 1)}
CACHE_LIMIT = 65_536
FUTURE_SLACK_S = 7 * 86_400
SECONDS = {f"{n:02d}": n for n in range(61)}
_MISS = object()


class LogClock:
    """Converts the timestamp texts of one log source; caches per text (and per hour for syslog)."""

    def __init__(self, tz: tzinfo | None = None, clock: Callable[[], float] = time.time) -> None:
        self._tz = tz
        self._clock = clock
        # public so that the parser's hot loop can look up a syslog timestamp without a method call
        self.sec_cache: dict[str, float | None] = {}
        self._hour_cache: dict[str, float | None] = {}
        self.minute_cache: dict[str, float | None] = {}  # "Nov 24 13:57" -> epoch of that minute
        self._text_cache: dict[str, float | None] = {}

    def _local_epoch(
        self, year: int, month: int, day: int, hour: int, minute: int = 0, sec: int = 0
    ) -> float:
        if self._tz is not None:
            return datetime(year, month, day, hour, minute, sec, tzinfo=self._tz).timestamp()
        datetime(year, month, day, hour, minute, sec)  # validates: mktime would turn Feb 30 into Mar 2
        return time.mktime((year, month, day, hour, minute, sec, 0, 0, -1))

    def infer(self, month: int, day: int, hour: int, minute: int = 0, sec: int = 0) -> float | None:
        """Epoch of a year-less local date: this year, or last year when this year's is too far ahead."""
        now = self._clock()
        year = datetime.fromtimestamp(now, self._tz).year if self._tz else time.localtime(now).tm_year
        for candidate in (year, year - 1):
            try:
                value = self._local_epoch(candidate, month, day, hour, minute, sec)
            except (ValueError, OverflowError):
                continue  # Feb 29 outside a leap year
            if value <= now + FUTURE_SLACK_S:
                return value
        return None

    def bsd(self, text: str) -> float | None:
        """``Nov 24 13:57:44`` (``Nov  4 ...`` too) -> epoch; None when it is no valid date."""
        if len(self.sec_cache) >= CACHE_LIMIT:
            self.sec_cache.clear()
            self._hour_cache.clear()
            self.minute_cache.clear()
        value: float | None = None
        try:
            base = self.minute_cache.get(text[:12], _MISS)
            if base is _MISS:
                base = self._minute(text)
            sec = SECONDS.get(text[13:15])
            if sec is None:
                sec = int(text[13:15])
            if base is not None and text[12] == ":" and sec < 61:
                value = base + sec  # type: ignore[operator]
        except (ValueError, IndexError):
            value = None
        self.sec_cache[text] = value
        return value

    def _minute(self, text: str) -> float | None:
        """Epoch of the minute ``Nov 24 13:57`` (cached per minute, the hour's inference per hour)."""
        base: float | None = None
        hour_key = text[:9]
        try:
            if hour_key in self._hour_cache:
                hour_base = self._hour_cache[hour_key]
            else:
                hour = int(text[7:9])
                hour_base = self.infer(MONTHS[text[:3]], int(text[4:6]), hour) if hour < 24 else None
                self._hour_cache[hour_key] = hour_base
            minute = int(text[10:12])
            if hour_base is not None and text[9] == ":" and minute < 60:
                base = hour_base + minute * 60
        except (ValueError, KeyError, IndexError):
            base = None
        self.minute_cache[text[:12]] = base
        return base

    def iso(self, text: str) -> float | None:
        """RFC 3339 / ISO 8601 (``2025-11-24T13:57:44.123456+01:00``; no offset = ``tz``) -> epoch."""
        if text in self._text_cache:
            return self._text_cache[text]
        if len(self._text_cache) >= CACHE_LIMIT:
            self._text_cache.clear()
        value: float | None
        try:
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                value = self._local_epoch(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
                value += dt.microsecond / 1e6
            else:
                value = dt.timestamp()
        except (ValueError, OverflowError):
            value = None
        self._text_cache[text] = value
        return value

    def formatted(self, text: str, time_format: str) -> float | None:
        """A service's own timestamp: ``time_format`` is ``iso`` or a strptime format (year optional)."""
        if time_format == "iso":
            return self.iso(text)
        key = f"{time_format}\x00{text}"
        if key in self._text_cache:
            return self._text_cache[key]
        if len(self._text_cache) >= CACHE_LIMIT:
            self._text_cache.clear()
        value: float | None
        try:
            if "%Y" in time_format or "%y" in time_format:
                dt = datetime.strptime(text, time_format)
                value = self._local_epoch(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)
            else:
                # parsed in a leap year so that "Feb 29" is accepted; the real year is inferred
                dt = datetime.strptime(f"2000 {text}", f"%Y {time_format}")
                value = self.infer(dt.month, dt.day, dt.hour, dt.minute, dt.second)
        except (ValueError, OverflowError):
            value = None
        self._text_cache[key] = value
        return value
