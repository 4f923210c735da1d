"""Curtailment of one site: in force or not (manual order or schedule), paced closing, and the ramp after.

Pure: every decision takes the time as an argument. Two clocks are used and kept apart: ``now`` is wall-clock
time (UNIX seconds; schedules and ``until`` are wall-clock facts, and tests drive it with a fake clock), and
``mono`` is a monotonic clock for rates (closes per second, admissions per second), which must not jump when
the wall clock is stepped.

- A manual curtailment lasts until its ``until``; the operator may end it early (``resume``).
- A scheduled window is in force from its start to its end; ``resume`` during it skips the rest of it.
- When a curtailment starts, the site's miners are sent no more work and closed at ``close_rate`` per second;
  new logins are refused.
- When it ends, logins are admitted at ``admit_rate`` per second for long enough to readmit every miner that
  was sent away (plus a margin), so the site's load comes back as a ramp, not a step.

Schedules (``schedule_at``): which daily windows are in force at an instant, and which comes next; a pure
function of (windows, now), so tests drive it with any instant, across daylight-saving changes included. Windows are local wall-clock times in a named zone; each occurrence is
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


# ---- one site's curtailment ------------------------------------------------------------------------------

RAMP_MARGIN = 60.0  # seconds the admission limit stays on beyond the time needed to readmit everyone


class Pacer:
    """Whole events allowed per call at ``rate`` per second, at most one second's worth at once."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, mono: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self.tokens = self.burst
        self.last = mono

    def refill(self, mono: float) -> None:
        self.tokens = min(self.burst, self.tokens + max(0.0, mono - self.last) * self.rate)
        self.last = mono

    def allowance(self, mono: float) -> int:
        self.refill(mono)
        return int(self.tokens)

    def spend(self, count: int) -> None:
        self.tokens = max(0.0, self.tokens - count)

    def take(self, mono: float) -> bool:
        self.refill(mono)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Change:
    """A curtailment started or ended (``kind``), for metrics and the audit log."""

    kind: str  # "start" or "end"
    reason: str  # "manual" or "schedule"
    until: float | None  # start: when it is due to end
    early: bool = False  # end: the operator ended it before its time
    since: float = 0.0  # end: when it started, and what it shed then
    shed_hashrate: float = 0.0
    shed_watts: float = 0.0


@dataclass(slots=True)
class Active:
    reason: str
    since: float
    until: float
    shed_hashrate: float = 0.0
    shed_watts: float = 0.0
    shed_miners: int = 0


class Curtailment:
    """One site's curtailment state."""

    def __init__(self, close_rate: float, admit_rate: float, mono: float) -> None:
        self.close_rate = close_rate
        self.admit_rate = admit_rate
        self.manual_until: float | None = None
        self.skip_until: float | None = None  # the scheduled window ending then was ended early
        self.active: Active | None = None
        self.closer = Pacer(close_rate, mono)
        self.admitter = Pacer(admit_rate, mono)
        self.ramp_until_mono = 0.0
        self.last_end: float | None = None
        self.closed = 0  # connections closed by curtailments
        self.refused: dict[str, int] = {"curtailed": 0, "ramp": 0}
        self.starts: dict[str, int] = {"manual": 0, "schedule": 0}
        self.ends: dict[str, int] = {"manual": 0, "schedule": 0}

    # ---- operator orders -----------------------------------------------------------------------------------

    def order(self, until: float) -> None:
        """Curtail now until ``until`` (replacing an earlier manual order)."""
        self.manual_until = until
        self.skip_until = None

    def resume(self, schedule: ScheduleState) -> bool:
        """End the curtailment now: the manual order goes, and the scheduled window in force is skipped.
        False when nothing was in force."""
        was = self.active is not None
        self.manual_until = None
        if schedule.active_until is not None:
            self.skip_until = schedule.active_until
        return was

    # ---- evaluation ----------------------------------------------------------------------------------------

    def wanted(self, schedule: ScheduleState, now: float) -> tuple[str, float] | None:
        """(reason, until) of the curtailment that should be in force now, or None."""
        if self.manual_until is not None and now >= self.manual_until:
            self.manual_until = None
        if self.skip_until is not None and now >= self.skip_until:
            self.skip_until = None
        scheduled = schedule.active_until if schedule.active_until != self.skip_until else None
        manual = self.manual_until
        if manual is not None and (scheduled is None or manual >= scheduled):
            return "manual", manual
        if scheduled is not None:
            return "schedule", scheduled
        return None

    def step(self, schedule: ScheduleState, now: float, mono: float) -> Change | None:
        """Bring the state in line with orders and schedule; the change made, if any."""
        wanted = self.wanted(schedule, now)
        if wanted is not None:
            reason, until = wanted
            if self.active is None:
                self.active = Active(reason, now, until)
                self.starts[reason] += 1
                self.closer = Pacer(self.close_rate, mono)
                return Change("start", reason, until)
            self.active.reason, self.active.until = reason, until  # extended, shortened or handed over
            return None
        if self.active is None:
            return None
        active, self.active = self.active, None
        self.last_end = now
        self.admitter = Pacer(self.admit_rate, mono)
        self.ramp_until_mono = mono + active.shed_miners / self.admit_rate + RAMP_MARGIN
        self.ends[active.reason] += 1
        return Change("end", active.reason, None, early=now < active.until, since=active.since,
                      shed_hashrate=active.shed_hashrate, shed_watts=active.shed_watts)

    # ---- what the server may do ----------------------------------------------------------------------------

    @property
    def curtailed(self) -> bool:
        return self.active is not None

    def ramping(self, mono: float) -> bool:
        return self.active is None and mono < self.ramp_until_mono

    def admit(self, mono: float) -> str | None:
        """None when a login may proceed; else why not (``curtailed`` or ``ramp``), counted."""
        if self.active is not None:
            self.refused["curtailed"] += 1
            return "curtailed"
        if mono < self.ramp_until_mono and not self.admitter.take(mono):
            self.refused["ramp"] += 1
            return "ramp"
        return None

    def closes_allowed(self, mono: float) -> int:
        return self.closer.allowance(mono) if self.active is not None else 0

    def closed_some(self, count: int) -> None:
        self.closer.spend(count)
        self.closed += count

    def state(self, mono: float) -> str:
        return "curtailed" if self.active is not None else "ramping" if self.ramping(mono) else "normal"
