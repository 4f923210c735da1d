"""Scheduled curtailment: which daily windows are in force at an instant, and which comes next.

A pure function of (windows, now): no clock is read here, so tests drive it with any instant, across
daylight-saving changes included. Windows are local wall-clock times in a named zone; each occurrence is
turned into UTC instants on its own date, so a 22:00-06:00 window lasts 7 hours on the night clocks go
forward and 9 on the night they go back. A local time that does not exist (inside a spring-forward gap) is
read as the end of the gap (02:30 -> the moment clocks jump to 03:00); one that exists twice (autumn) is its
first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from zoneinfo import ZoneInfo

from pool.programme.siteconfig import DailyWindow

LOOKAHEAD_DAYS = 8  # a window on one weekday only still has a next occurrence within this


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the schedule says at one instant (UNIX seconds)."""

    active_until: float | None  # in a window now: when it (and any window chained to it) ends
    next_start: float | None  # the next window that starts after now (or after the active one ends)
    next_end: float | None


def local_instant(day: date, wall: clock_time, zone: ZoneInfo) -> int:
    """The UNIX time at which the wall clock of ``zone`` reads ``wall`` on ``day``: the first such instant when
    it reads it twice (autumn), the end of the gap when it never does (spring: 02:30 -> the 03:00 jump)."""
    naive = datetime.combine(day, wall)
    first = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    if datetime.fromtimestamp(first, zone).replace(tzinfo=None) == naive:
        return first
    # In a gap: the pre-change offset lands after the jump, the post-change one before it. The jump is the
    # first instant whose wall-clock reading is not earlier than ``wall``.
    lo, hi = int(naive.replace(tzinfo=zone, fold=1).timestamp()), first
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def occurrences(window: DailyWindow, now: float) -> Iterator[tuple[float, float]]:
    """(start, end) instants of the window's occurrences starting from the local day before ``now`` on."""
    today = datetime.fromtimestamp(now, window.zone).date()
    for offset in range(-1, LOOKAHEAD_DAYS + 1):
        day = today + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        start = local_instant(day, window.start, window.zone)
        end_day = day + timedelta(days=1) if window.end <= window.start else day
        end = local_instant(end_day, window.end, window.zone)
        if end > start:
            yield start, end


def schedule_at(windows: Iterable[DailyWindow], now: float) -> ScheduleState:
    """Whether ``now`` falls in a window (and until when) and the next window after that."""
    spans = sorted(span for window in windows for span in occurrences(window, now))
    active_until: float | None = None
    for start, end in spans:
        if start <= now < end or (active_until is not None and start <= active_until):
            active_until = end if active_until is None else max(active_until, end)
    after = active_until if active_until is not None else now
    upcoming = [(s, e) for s, e in spans if s > after]
    if not upcoming:
        return ScheduleState(active_until, None, None)
    next_start, next_end = upcoming[0]
    for start, end in upcoming[1:]:  # windows that overlap or touch the next one make one curtailment
        if start <= next_end:
            next_end = max(next_end, end)
    return ScheduleState(active_until, next_start, next_end)
