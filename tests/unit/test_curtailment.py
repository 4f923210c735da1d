"""Curtailment of a site, driven by a fake wall clock and a fake monotonic clock: manual orders, a schedule,
paced closing, refusals while curtailed, the ramp after, and the records of each start and end."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from typing import Any

from pool.ledger import book as audit_book
from pool.programme.controller import SiteController
from pool.programme.curtail import RAMP_MARGIN, Pacer
from pool.programme.siteconfig import parse_programme


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class Clocks:
    def __init__(self, now: float) -> None:
        self.now = now
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


class FakeServer:
    """Stands in for the Stratum server: records what it was told to close."""

    def __init__(self, controller: SiteController) -> None:
        self.controller = controller
        self.closed: list[tuple[int, str, str]] = []

    def close_sessions(self, sessions: list[int], reason: str, message: str) -> int:
        for sid in sessions:
            self.closed.append((sid, reason, message))
            self.controller.closed(sid)
        return len(sessions)


class FakeLedger:
    """Runs each submitted operation at once on an in-memory database with the ledger's schema."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(audit_book.SCHEMA)

    def submit(self, op: Any) -> Any:
        op(self.conn)
        return self  # done at once: callbacks (error logging) have nothing to report

    def add_done_callback(self, callback: Any) -> None:
        pass

    @property
    def entries(self) -> list[tuple[str, dict[str, Any]]]:
        entries = audit_book.read_audit(self.conn)
        assert audit_book.verify(entries).ok
        return [(e.kind, json.loads(e.payload)) for e in entries]


def make(windows: list[dict[str, Any]] | None = None, close_rate: float = 2, admit_rate: float = 1,
         now: str = "2026-11-30T12:00:00") -> tuple[SiteController, Clocks, FakeServer, FakeLedger]:
    programme = parse_programme(
        [{"name": "north", "cidrs": ["10.1.0.0/16"], "power_budget_kw": 100, "efficiency_j_per_th": 20,
          "curtailment": windows or []},
         {"name": "south", "cidrs": ["10.2.0.0/16"], "power_budget_kw": 100, "efficiency_j_per_th": 20}],
        {"curtail_close_rate": close_rate, "resume_admit_rate": admit_rate},
    )
    clocks = Clocks(ts(now))
    controller = SiteController(programme, clock=lambda: clocks.now, mono=lambda: clocks.mono)
    server, ledger = FakeServer(controller), FakeLedger()
    controller.server, controller.ledger = server, ledger  # type: ignore[assignment]
    return controller, clocks, server, ledger


def login(controller: SiteController, sid: int, ip: str = "10.1.0.5") -> str | None:
    site, refusal = controller.admit(ip, f"rig{sid}")
    if refusal is None:
        controller.authorized(sid, site, f"addr.rig{sid}", f"rig{sid}")
    return refusal


def test_pacer_allows_whole_events_at_its_rate():
    pacer = Pacer(2.0, 0.0)
    assert pacer.allowance(0.0) == 2
    pacer.spend(2)
    assert pacer.allowance(0.4) == 0
    assert pacer.allowance(0.5) == 1
    assert pacer.allowance(100.0) == 2  # at most one second's worth at once


def test_manual_curtailment_closes_at_pace_refuses_then_ramps_back():
    controller, clocks, server, ledger = make(close_rate=2, admit_rate=1)
    for sid in range(1, 6):
        assert login(controller, sid) is None
    login(controller, 99, ip="10.2.0.1")  # south is not curtailed
    for _ in range(0, 600, 3):
        controller.share("north", "addr.rig1", "rig1", 65536.0, False)
        clocks.advance(3)
    changes = controller.curtail("north", clocks.now + 3600)
    assert [(c.kind, c.reason) for c in changes] == [("start", "manual")]
    assert controller.paused == {"north"}
    assert len(server.closed) == 2  # two per second, the first second's worth at once
    assert all(reason == "curtailed" and "Site north is curtailed until" in message
               for _, reason, message in server.closed)
    refusal = login(controller, 50)
    assert refusal is not None and "curtailed until 2026-11-30 13:" in refusal
    assert login(controller, 51, ip="10.2.0.9") is None  # other sites are untouched
    clocks.advance(0.5)
    controller.tick()
    assert len(server.closed) == 3
    clocks.advance(1.0)
    controller.tick()
    assert len(server.closed) == 5
    assert sorted(sid for sid, _, _ in server.closed) == [1, 2, 3, 4, 5]
    assert controller.book.summary("north", clocks.now)["miners"] == 0
    kind, start = ledger.entries[0]
    assert kind == "site_curtailment"
    assert start["change"] == "start" and start["reason"] == "manual" and start["miners"] == 5
    assert start["hashrate_shed"] > 0 and start["power_shed_watts"] == start["hashrate_shed"] / 1e12 * 20
    view = controller.site_view("north")["curtailment"]
    assert view["state"] == "curtailed" and view["reason"] == "manual"
    assert view["miners_shed"] == 5 and view["closed"] == 5 and view["refused"]["curtailed"] == 1

    was, changes = controller.resume("north")
    assert was and [(c.kind, c.early) for c in changes] == [("end", True)]
    assert controller.paused == set()
    end = ledger.entries[-1][1]
    assert end["change"] == "end" and end["early"] is True and end["seconds"] == 1.5
    assert (end["hashrate_shed"], end["power_shed_watts"]) == (start["hashrate_shed"], start["power_shed_watts"])
    # The ramp: one login per second (burst 1), for 5 shed miners / 1 per s + the margin.
    assert login(controller, 60) is None
    refusal = login(controller, 61)
    assert refusal is not None and "resuming after a curtailment" in refusal
    clocks.advance(1.0)
    assert login(controller, 61) is None
    assert controller.site_view("north")["curtailment"]["state"] == "ramping"
    clocks.advance(5 + RAMP_MARGIN)
    assert all(login(controller, sid) is None for sid in range(70, 80))  # the ramp is over
    assert controller.site_view("north")["curtailment"]["state"] == "normal"


def test_manual_curtailment_ends_by_itself_at_until():
    controller, clocks, server, ledger = make()
    controller.curtail("north", clocks.now + 60)
    clocks.advance(59.9)
    assert controller.tick() == []
    clocks.advance(0.1)
    changes = controller.tick()
    assert [(c.kind, c.early) for c in changes] == [("end", False)]


def test_scheduled_window_with_a_fake_clock():
    windows = [{"start": "18:00", "end": "21:00", "timezone": "Europe/Madrid"}]  # 17:00-20:00 UTC in winter
    controller, clocks, server, ledger = make(windows, now="2026-11-30T16:59:00")
    login(controller, 1)
    controller.tick()
    view = controller.site_view("north")["curtailment"]
    assert view["state"] == "normal"
    assert view["next_window"] == {"start": "2026-11-30T17:00:00Z", "end": "2026-11-30T20:00:00Z"}
    clocks.advance(60)
    changes = controller.tick()
    assert [(c.kind, c.reason) for c in changes] == [("start", "schedule")]
    assert [sid for sid, _, _ in server.closed] == [1]
    view = controller.site_view("north")["curtailment"]
    assert view["until"] == "2026-11-30T20:00:00Z"
    assert view["next_window"] == {"start": "2026-12-01T17:00:00Z", "end": "2026-12-01T20:00:00Z"}
    clocks.advance(3 * 3600 - 1)
    assert controller.tick() == []
    clocks.advance(1)
    assert [(c.kind, c.early) for c in controller.tick()] == [("end", False)]
    assert [e["change"] for _, e in ledger.entries] == ["start", "end"]
    assert ledger.entries[0][1]["until"] == "2026-11-30T20:00:00Z"


def test_resume_skips_the_rest_of_a_scheduled_window_only():
    windows = [{"start": "18:00", "end": "21:00", "timezone": "UTC"}]
    controller, clocks, _, _ = make(windows, now="2026-11-30T18:30:00")
    assert [c.kind for c in controller.tick()] == ["start"]
    was, changes = controller.resume("north")
    assert was and [c.kind for c in changes] == ["end"]
    clocks.advance(60)
    assert controller.tick() == []  # not restarted by the same window
    clocks.advance(24 * 3600)
    assert [c.kind for c in controller.tick()] == ["start"]  # the next day's window applies


def test_manual_order_longer_than_the_window_wins_and_hands_over():
    windows = [{"start": "18:00", "end": "21:00", "timezone": "UTC"}]
    controller, clocks, _, _ = make(windows, now="2026-11-30T18:30:00")
    controller.tick()
    controller.curtail("north", ts("2026-11-30T23:00:00"))
    view = controller.site_view("north")["curtailment"]
    assert (view["reason"], view["until"]) == ("manual", "2026-11-30T23:00:00Z")
    clocks.now = ts("2026-11-30T22:59:59")
    assert controller.tick() == []
    clocks.now = ts("2026-11-30T23:00:00")
    assert [c.kind for c in controller.tick()] == ["end"]


def test_a_manual_order_still_due_is_restored_after_a_restart():
    controller, clocks, server, ledger = make()
    controller.curtail("north", clocks.now + 3600)
    controller.curtail("south", clocks.now + 60)
    controller.resume("south")
    records = [payload for _, payload in ledger.entries]

    after, clocks2, _, ledger2 = make(now="2026-11-30T12:10:00")
    assert after.restore(records) == ["north"]
    changes = after.tick()
    assert [(c.kind, c.reason) for c in changes] == [("start", "manual")]
    assert after.site_view("north")["curtailment"]["until"] == "2026-11-30T13:00:00Z"
    assert ledger2.entries[-1][1]["restored"] is True
    assert after.site_view("south")["curtailment"]["state"] == "normal"

    late, _, _, _ = make(now="2026-11-30T13:00:01")  # the order ran out while the pool was down
    assert late.restore(records) == []
