"""Scheduled curtailment: which daily windows are in force at an instant, and which comes next.

A pure function of (windows, now): no clock is read here, so tests drive it with any instant, across
daylight-saving changes included. Windows are local wall-clock times in a named zone; each occurrence is
turned into UTC instants on its own date, so a 22:00-06:00 window lasts 7 hours on the night clocks go
forward and 9 on the night they go back. A local start that does not exist (inside a spring-forward gap)
falls at the first instant after the gap's wall-clock equivalent (02:30 reads as 03:30 summer time); one that
exists twice (autumn) is its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pool.programme.siteconfig import DailyWindow

LOOKAHEAD_DAYS = 8  # a window on one weekday only still has a next occurrence within this


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the schedule says at one instant (UNIX seconds)."""

    active_until: float | None  # in a window now: when it (and any window chained to it) ends
    next_start: float | None  # the next window that starts after now (or after the active one ends)
    next_end: float | None


def _instant(day: date, window: DailyWindow, at_end: bool) -> float:
    wall = window.end if at_end else window.start
    local = datetime.combine(day, wall, tzinfo=window.zone)
    # Round-trip through UTC so a wall time inside a gap gets its real instant.
    return local.astimezone(UTC).timestamp()


def occurrences(window: DailyWindow, now: float) -> Iterator[tuple[float, float]]:
    """(start, end) instants of the window's occurrences starting from the local day before ``now`` on."""
    today = datetime.fromtimestamp(now, window.zone).date()
    for offset in range(-1, LOOKAHEAD_DAYS + 1):
        day = today + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        start = _instant(day, window, at_end=False)
        end_day = day + timedelta(days=1) if window.end <= window.start else day
        end = _instant(end_day, window, at_end=True)
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
