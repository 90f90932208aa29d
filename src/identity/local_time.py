"""Quiet hours and calendar windows in a person's own time zone.

"No pushes 22:00-09:00" and "at most 2 a day" mean the person's evening and the
person's day, not the server's: a send at 23:30 UTC is fine in Singapore and rude
in London. Everything here is plain ``zoneinfo`` arithmetic on UTC milliseconds,
so a daylight-saving change shortens or lengthens that day, and a quiet window
ending at a local time that does not exist (a spring-forward gap) is read with
the offset from before the change: 01:30 in a 01:00-02:00 gap ends at 02:30
summer time, never before the gap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Period", "QuietWindow", "period_bounds", "quiet_until", "zone", "DAY_MS", "WEEK_MS"]

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
_QUARTER_HOUR = 900_000
_CLOCK = re.compile(r"^\s*([01]?\d|2[0-4]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


class Period(IntEnum):
    """How long a frequency-cap window is; numbers shared with ``identity.v1.CapPeriod``."""

    DAY = 1
    WEEK = 2

    @property
    def label(self) -> str:
        return _PERIOD_LABELS[self]  # made once below: an enum's name is slow to reach

    @property
    def ms(self) -> int:
        return DAY_MS if self is Period.DAY else WEEK_MS


_PERIOD_LABELS = {period: period.name.lower() for period in Period}


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name, e.g. Europe/London)"
                         ) from None


@dataclass(frozen=True)
class QuietWindow:
    """A daily window of local time, in minutes after midnight; ``start > end`` spans midnight.

    ``start == end`` is an empty window (no quiet hours).
    """

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> QuietWindow:
        """``"22:00-09:00"`` -> a window; ValueError otherwise."""
        match = _CLOCK.match(text)
        if not match:
            raise ValueError(f"not a window of local times: {text!r} (try 22:00-09:00)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start > 1440 or end > 1440:
            raise ValueError(f"not a time of day in {text!r}")
        return cls(start % 1440, end % 1440)

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"

    def contains(self, minute: int) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


def _local(ms: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz)


def _ms_at(day: date, minute: int, tz: ZoneInfo) -> int:
    """UTC ms of local ``day`` at ``minute`` after midnight; a time in a DST gap moves forward
    by the gap's length."""
    naive = datetime.combine(day, time()) + timedelta(minutes=minute)
    aware = naive.replace(tzinfo=tz)
    # In a gap, fold=0 reads the wall time with the offset from before the change, which
    # lands after the gap once converted to UTC.
    instant = aware.astimezone(UTC)
    return int(instant.timestamp() * 1000)


def quiet_until(now_ms: int, tz: ZoneInfo, window: QuietWindow) -> int | None:
    """When the quiet window around ``now_ms`` ends (UTC ms), or None when not inside one."""
    until = _quiet_until_minute(now_ms // 60_000, tz, window)
    if until is None:
        return None
    return until if until > now_ms else now_ms + 60_000


@lru_cache(maxsize=4096)  # window edges are whole minutes: one answer per minute and zone
def _quiet_until_minute(minute_of_epoch: int, tz: ZoneInfo, window: QuietWindow) -> int | None:
    now_ms = minute_of_epoch * 60_000
    local = _local(now_ms, tz)
    minute = local.hour * 60 + local.minute
    if not window.contains(minute):
        return None
    end_day = local.date()
    if window.start > window.end and minute >= window.start:
        end_day += timedelta(days=1)  # evening part of a window that ends tomorrow morning
    return _ms_at(end_day, window.end, tz)


def period_bounds(now_ms: int, tz: ZoneInfo, period: Period, rolling: bool) -> tuple[int, int]:
    """The window ``[start, end)`` in UTC ms that holds ``now_ms``.

    Rolling: the last 24 hours (or 7 days) up to and including now. Calendar: the
    person's local day (midnight to midnight) or week (Monday to Monday).
    """
    if rolling:
        return now_ms - period.ms + 1, now_ms + 1
    return _calendar_bounds(now_ms // _QUARTER_HOUR, tz, period)


@lru_cache(maxsize=4096)  # local midnights fall on quarter hours of UTC in every zone
def _calendar_bounds(quarter: int, tz: ZoneInfo, period: Period) -> tuple[int, int]:
    today = _local(quarter * _QUARTER_HOUR, tz).date()
    if period is Period.DAY:
        first, days = today, 1
    else:
        first, days = today - timedelta(days=today.weekday()), 7
    return _ms_at(first, 0, tz), _ms_at(first + timedelta(days=days), 0, tz)
