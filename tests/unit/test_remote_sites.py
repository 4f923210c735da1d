"""Sites in a front-end process (pool/programme/remote.py): the coordinator's controller decides, the front-end
admits or refuses by the published state (its share of the ramp's rate), and its events rebuild the figures in
the coordinator's one site book. Fake clocks; the link is a list."""

from __future__ import annotations

from typing import Any

from pool.programme.remote import FrontendSites, apply_events, global_id, split_id
from tests.unit.test_curtailment import make, ts


def front(controller: Any, process: int, mono: list[float]) -> tuple[FrontendSites, list[tuple[Any, ...]]]:
    sent: list[tuple[Any, ...]] = []
    sites = FrontendSites(controller.programme, process, sent.append, mono=lambda: mono[0])
    return sites, sent


def test_global_session_ids_round_trip() -> None:
    assert split_id(global_id(0, 7)) == (0, 7)
    assert split_id(global_id(3, (1 << 40) - 1)) == (3, (1 << 40) - 1)
    assert global_id(1, 5) != global_id(0, 5)


def test_events_from_two_processes_make_one_site_book() -> None:
    controller, clocks, _, _ = make()
    mono = [clocks.mono]
    a, sent_a = front(controller, 0, mono)
    b, sent_b = front(controller, 1, mono)
    assert a.admit("10.1.0.5", "rig") == ("north", None)
    a.authorized(1, "north", "addr.rig", "rig")
    b.authorized(1, "north", "addr.rig2", "rig2")  # the same local id in another process: another session
    a.share("north", "addr.rig", "rig", 2.0, False)
    b.share("north", "addr.rig2", "rig2", None, False)
    apply_events(controller, sent_a + sent_b)
    north = controller.book.sites["north"]
    assert len(north.sessions) == 2 and (north.accepted, north.rejected) == (1, 1)
    apply_events(controller, [("closed", global_id(1, 1))])
    assert north.sessions == {global_id(0, 1)}


def test_curtailed_then_ramp_at_this_processes_share_of_the_rate() -> None:
    controller, clocks, _, _ = make(admit_rate=4)
    mono = [clocks.mono]
    published: list[str] = []
    controller.publish = published.append
    sites, sent = front(controller, 0, mono)
    controller.curtail("north", ts("2026-11-30T13:00:00"))
    assert published == ["north"]
    sites.apply("north", controller.front_state("north", processes=2))
    assert "north" in sites.paused
    site, refusal = sites.admit("10.1.0.5", "rig")
    assert site == "north" and refusal is not None and "curtailed until 2026-11-30 13:00 UTC" in refusal
    assert sites.admit("10.2.0.5", "rig") == ("south", None)  # other sites are not touched
    apply_events(controller, sent)
    assert controller.curtailments["north"].refused["curtailed"] == 1

    controller.resume("north")
    assert published == ["north", "north"]
    sites.apply("north", controller.front_state("north", processes=2))
    assert "north" not in sites.paused
    # The pool admits 4 per second; this process 2: two now, then one per half second.
    assert [sites.admit("10.1.0.5", "rig")[1] is None for _ in range(3)] == [True, True, False]
    mono[0] += 0.5
    assert sites.admit("10.1.0.5", "rig")[1] is None
    assert "admits 4 miners per second" in (sites.admit("10.1.0.5", "rig")[1] or "")


def test_resync_reports_every_live_login_again() -> None:
    controller, clocks, _, _ = make()
    sites, sent = front(controller, 1, [clocks.mono])
    sites.resync([(4, "north", [("addr.a", "a"), ("addr.b", "b")])])
    apply_events(controller, sent)
    assert controller.book.sites["north"].sessions == {global_id(1, 4)}
    assert controller.book.logins() == [("north", ("addr.a", "addr.b"))]
