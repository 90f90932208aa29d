"""Calendar days in a configured time zone, for whole arrays of UTC seconds.

Segment windows speak of days ("from 30 to 0 days ago"), and a day is a calendar
day where the shop is, not 86,400 seconds: around a daylight-saving change a day
lasts 23 or 25 hours. The table of local midnights (one per day, built once from
``zoneinfo``) turns any UTC instant into its local day number with one
``np.searchsorted``, and any day back into the UTC instant it starts at.
Day numbers count days since 1970-01-01 (local).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["LocalDays", "EPOCH", "local_days"]

EPOCH = date(1970, 1, 1)
_LAST = date(2107, 1, 1)  # past the end of u32 seconds


class LocalDays:
    """Local day numbers <-> UTC seconds in one time zone; DST safe."""

    def __init__(self, time_zone: str = "UTC"):
        self.zone = ZoneInfo(time_zone)
        self.name = time_zone
        days = (_LAST - EPOCH).days + 1
        # Offsets only change a few times a year: compute midnights per day from the
        # offset at local noon, which never falls in a gap.
        starts = np.empty(days, dtype=np.int64)
        day = EPOCH
        for i in range(days):
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=self.zone)
            starts[i] = int(noon.timestamp()) - 12 * 3600
            day += timedelta(days=1)
        # Where an offset change falls between midnight and noon, ask zoneinfo directly.
        check = np.flatnonzero(np.diff(starts) != 86400)
        for i in np.unique(np.concatenate([check, check + 1])):
            if 0 <= i < days:
                d = EPOCH + timedelta(days=int(i))
                starts[i] = int(datetime(d.year, d.month, d.day, tzinfo=self.zone).timestamp())
        self.starts = starts

    def day_of(self, seconds: np.ndarray | int) -> np.ndarray | int:
        """The local day number of UTC seconds (array or scalar).

        Arrays: a guess from whole UTC days, corrected by comparing with the local
        midnights either side (offsets move a day start by hours, not days), which is
        a few sequential passes instead of a binary search per value."""
        if np.ndim(seconds) == 0 or len(seconds) < 4096:
            result = np.searchsorted(self.starts, seconds, side="right") - 1
            return int(result) if np.ndim(result) == 0 else result
        starts, last = self.starts, len(self.starts) - 1
        t = np.asarray(seconds, dtype=np.int64)
        day = np.clip((t - int(starts[0])) // 86400, 0, last)
        for _ in range(3):
            early = (t < starts[day]) & (day > 0)
            late = t >= starts[np.minimum(day + 1, last)]
            late &= day < last
            if not (early.any() or late.any()):
                break
            day = day - early + late
        else:  # a zone that once skipped whole days: fall back to the search
            day = np.searchsorted(starts, t, side="right") - 1
        day[t < starts[0]] = -1
        return day

    def start(self, day: int) -> int:
        """UTC seconds at which local day ``day`` begins."""
        return int(self.starts[max(0, min(day, len(self.starts) - 1))])

    def day_number(self, when: date) -> int:
        return (when - EPOCH).days

    def date_of(self, day: int) -> date:
        return EPOCH + timedelta(days=day)


@lru_cache(maxsize=8)
def local_days(time_zone: str = "UTC") -> LocalDays:
    """The shared table of a time zone (building one takes a fraction of a second)."""
    return LocalDays(time_zone)
