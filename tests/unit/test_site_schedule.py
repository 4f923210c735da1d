"""Scheduled curtailment windows: a pure function of (windows, now), checked against hand-computed UTC instants,
across both daylight-saving changes of 2026 in Madrid (29 March 02:00 CET -> 03:00 CEST; 25 October 03:00
CEST -> 02:00 CET)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from pool.programme.curtail import schedule_at
from pool.programme.siteconfig import DailyWindow

MADRID = ZoneInfo("Europe/Madrid")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def window(start: str, end: str, zone: ZoneInfo = MADRID, days: tuple[int, ...] = tuple(range(7))) -> DailyWindow:
    return DailyWindow(time.fromisoformat(start), time.fromisoformat(end), zone, frozenset(days))


def test_outside_and_inside_an_evening_window():
    evening = [window("18:00", "21:00")]  # November: CET, UTC+1
    before = schedule_at(evening, ts("2026-11-30T16:59:59"))
    assert before.active_until is None
    assert (before.next_start, before.next_end) == (ts("2026-11-30T17:00:00"), ts("2026-11-30T20:00:00"))
    during = schedule_at(evening, ts("2026-11-30T17:00:00"))
    assert during.active_until == ts("2026-11-30T20:00:00")
    assert during.next_start == ts("2026-12-01T17:00:00")
    assert schedule_at(evening, ts("2026-11-30T20:00:00")).active_until is None  # the end is exclusive


def test_overnight_window_is_seven_hours_the_night_clocks_go_forward():
    night = [window("22:00", "06:00")]
    state = schedule_at(night, ts("2026-03-28T21:00:00"))  # 22:00 CET
    assert state.active_until == ts("2026-03-29T04:00:00")  # 06:00 CEST
    assert schedule_at(night, ts("2026-03-29T03:59:59")).active_until == ts("2026-03-29T04:00:00")
    after = schedule_at(night, ts("2026-03-29T04:00:00"))
    assert after.active_until is None
    assert after.next_start == ts("2026-03-29T20:00:00")  # 22:00 CEST


def test_overnight_window_is_nine_hours_the_night_clocks_go_back():
    night = [window("22:00", "06:00")]
    state = schedule_at(night, ts("2026-10-24T20:00:00"))  # 22:00 CEST
    assert state.active_until == ts("2026-10-25T05:00:00")  # 06:00 CET
    assert schedule_at(night, ts("2026-10-25T04:30:00")).active_until == ts("2026-10-25T05:00:00")


def test_a_start_inside_the_spring_gap_begins_when_clocks_jump():
    gap = [window("02:30", "03:30")]  # 02:00-03:00 does not exist on 29 March
    state = schedule_at(gap, ts("2026-03-29T00:00:00"))
    assert (state.next_start, state.next_end) == (ts("2026-03-29T01:00:00"), ts("2026-03-29T01:30:00"))
    assert schedule_at(gap, ts("2026-03-29T01:00:00")).active_until == ts("2026-03-29T01:30:00")
    assert schedule_at(gap, ts("2026-03-29T00:59:59")).active_until is None


def test_a_time_that_happens_twice_uses_the_first():
    twice = [window("02:30", "03:30")]  # 02:00-03:00 happens twice on 25 October
    state = schedule_at(twice, ts("2026-10-25T00:00:00"))
    assert state.next_start == ts("2026-10-25T00:30:00")  # 02:30 CEST
    assert state.next_end == ts("2026-10-25T02:30:00")  # 03:30 CET: two real hours


def test_weekdays_and_the_next_window_a_week_away():
    mondays = [window("09:00", "10:00", ZoneInfo("UTC"), days=(0,))]
    state = schedule_at(mondays, ts("2026-12-01T12:00:00"))  # a Tuesday
    assert state.next_start == ts("2026-12-07T09:00:00")
    overnight_friday = [window("23:00", "01:00", ZoneInfo("UTC"), days=(4,))]
    assert schedule_at(overnight_friday, ts("2026-12-05T00:30:00")).active_until == ts("2026-12-05T01:00:00")
    assert schedule_at(overnight_friday, ts("2026-12-06T00:30:00")).active_until is None  # Saturday's start


def test_touching_and_overlapping_windows_make_one_curtailment():
    windows = [window("17:00", "19:00", ZoneInfo("UTC")), window("19:00", "20:00", ZoneInfo("UTC")),
               window("19:30", "21:00", ZoneInfo("UTC"))]
    assert schedule_at(windows, ts("2026-12-01T18:00:00")).active_until == ts("2026-12-01T21:00:00")
    upcoming = schedule_at(windows, ts("2026-12-01T12:00:00"))
    assert (upcoming.next_start, upcoming.next_end) == (ts("2026-12-01T17:00:00"), ts("2026-12-01T21:00:00"))


def test_no_windows():
    state = schedule_at([], ts("2026-12-01T12:00:00"))
    assert (state.active_until, state.next_start, state.next_end) == (None, None, None)
