"""Quiet hours and calendar windows in a person's zone, across daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, datetime

from identity.local_time import Period, QuietWindow, period_bounds, quiet_until, zone

LONDON = zone("Europe/London")


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def test_quiet_window_spanning_midnight_ends_next_local_morning():
    window = QuietWindow.parse("22:00-09:00")
    assert quiet_until(ms(2026, 7, 1, 21, 30), LONDON, window) == ms(2026, 7, 2, 8, 0)  # 22:30 BST
    assert quiet_until(ms(2026, 7, 1, 2, 0), LONDON, window) == ms(2026, 7, 1, 8, 0)  # 03:00 BST
    assert quiet_until(ms(2026, 7, 1, 12, 0), LONDON, window) is None


def test_quiet_window_ending_inside_the_spring_forward_gap_ends_after_the_gap():
    # 2026-03-29 01:00 GMT clocks jump to 02:00 BST; 01:30 local does not exist and is
    # read as 01:30 GMT, that is 02:30 BST
    window = QuietWindow.parse("00:00-01:30")
    assert quiet_until(ms(2026, 3, 29, 0, 15), LONDON, window) == ms(2026, 3, 29, 1, 30)


def test_calendar_day_is_23_hours_on_the_spring_forward_day():
    start, end = period_bounds(ms(2026, 3, 29, 12, 0), LONDON, Period.DAY, rolling=False)
    assert (start, end) == (ms(2026, 3, 29, 0, 0), ms(2026, 3, 29, 23, 0))


def test_calendar_week_starts_on_local_monday_and_rolling_week_ends_now():
    now = ms(2026, 6, 3, 12, 0)  # a Wednesday
    assert period_bounds(now, zone("Asia/Tokyo"), Period.WEEK, rolling=False) == (
        ms(2026, 5, 31, 15, 0), ms(2026, 6, 7, 15, 0))
    assert period_bounds(now, LONDON, Period.WEEK, rolling=True) == (
        now - 7 * 86_400_000 + 1, now + 1)
