"""The site book: assignment by network and worker prefix, per-site hashrate (the pool's estimator), power
against budget, shares, blocks and silent workers. Plain floats are the clock."""

from __future__ import annotations

from typing import Any

import pytest

from pool.mining.stats import HASHES_PER_DIFF1
from pool.programme.siteconfig import UNASSIGNED, parse_programme
from pool.programme.sites import SiteBook

START = 1_800_000_017.0
DIFFICULTY = 65536.0
RATE = 100e12


def programme(**overrides: Any) -> Any:
    sites = [
        {"name": "east", "worker_prefix": "east-", "power_budget_kw": 10, "efficiency_j_per_th": 30,
         "worker_efficiency": {"east-s21*": 15}},
        {"name": "lab", "cidrs": ["127.0.0.1/32", "10.9.0.0/16"], "power_budget_kw": 5, "efficiency_j_per_th": 20},
        {"name": "both", "cidrs": ["192.168.0.0/16"], "worker_prefix": "b-", "power_budget_kw": 1,
         "efficiency_j_per_th": 20},
        {"name": "v6", "cidrs": ["2001:db8::/32"], "power_budget_kw": 1, "efficiency_j_per_th": 20},
    ]
    return parse_programme(sites, overrides)


@pytest.mark.parametrize(
    ("ip", "name", "site"),
    [
        ("127.0.0.1", "east-1", "east"),  # the first matching site in config order
        ("127.0.0.1", "rig1", "lab"),
        ("10.9.3.4", "", "lab"),
        ("127.0.0.2", "rig1", UNASSIGNED),
        ("::ffff:10.9.0.1", "x", "lab"),  # IPv4-mapped IPv6
        ("2001:db8::5", "x", "v6"),
        ("192.168.1.1", "b-7", "both"),
        ("192.168.1.1", "c-7", UNASSIGNED),  # both set: both must match
        ("10.200.0.1", "b-7", UNASSIGNED),
        ("?", "rig", UNASSIGNED),
    ],
)
def test_assignment(ip: str, name: str, site: str):
    assert SiteBook(programme(), START).assign(ip, name) == site


def _feed(book: SiteBook, site: str, workers: list[str], until: float) -> None:
    interval = DIFFICULTY * HASHES_PER_DIFF1 / RATE
    events = []
    for i, name in enumerate(workers):
        book.authorized(i + 1, site, f"addr.{name}", name, START)
        t = START + interval * (i + 1) / len(workers)
        while t <= until:
            events.append((t, name))
            t += interval
    for t, name in sorted(events):
        book.share(site, f"addr.{name}", name, DIFFICULTY, False, t)


def test_site_hashrate_from_the_first_minute_and_within_ten_percent_after_ten():
    for seconds, tolerance in ((60, 0.35), (90, 0.35), (600, 0.10), (777, 0.10), (1203, 0.10)):
        book = SiteBook(programme(), START - 3600)  # the pool started an hour before the site's miners
        _feed(book, "lab", ["r1", "r2", "r3"], START + seconds)
        summary = book.summary("lab", START + seconds)
        assert abs(summary["hashrate"] - 3 * RATE) <= tolerance * 3 * RATE, (seconds, summary["hashrate"])


def test_power_uses_fleet_average_and_worker_patterns_against_the_budget():
    book = SiteBook(programme(), START)
    _feed(book, "east", ["east-s19-1", "east-s21-1"], START + 900)
    summary = book.summary("east", START + 900)
    # 100 TH/s at 30 J/TH + 100 TH/s at 15 J/TH = 4.5 kW of a 10 kW budget.
    assert summary["power_watts"] == pytest.approx(4500, rel=0.1)
    assert summary["power_budget_watts"] == 10_000
    assert summary["budget_share"] == pytest.approx(0.45, rel=0.1)
    assert summary["miners"] == 2 and summary["workers"] == 2
    unassigned = book.summary(UNASSIGNED, START + 900)
    assert unassigned["power_watts"] == 0 and unassigned["budget_share"] is None


def test_shares_blocks_and_sessions_are_counted_per_site():
    book = SiteBook(programme(), START)
    book.authorized(1, "lab", "addr.r1", "r1", START)
    book.authorized(1, "lab", "addr.r2", "r2", START)  # a second worker on the same connection
    book.authorized(2, "east", "addr.east-1", "east-1", START)
    book.share("lab", "addr.r1", "r1", 2.0, False, START + 1)
    book.share("lab", "addr.r2", "r2", 3.0, True, START + 2)
    book.share("lab", "", "", None, False, START + 3)
    book.share("lab", "addr.r1", "r1", None, True, START + 3)  # stale, but its block was sent
    lab = book.summary("lab", START + 4)
    assert (lab["accepted"], lab["rejected"], lab["blocks"], lab["accepted_difficulty"]) == (2, 2, 2, 5.0)
    assert (lab["miners"], lab["workers"]) == (1, 2)
    assert book.sessions_of("lab", 10) == [1]
    book.closed(1, START + 5)
    book.closed(1, START + 5)  # twice is harmless
    lab = book.summary("lab", START + 6)
    assert (lab["miners"], lab["workers"]) == (0, 0)
    assert book.summary("east", START + 6)["miners"] == 1


def test_silent_workers_connected_or_gone_and_not_while_curtailed():
    book = SiteBook(programme(silent_after_minutes=10), START)
    book.authorized(1, "lab", "addr.busy", "busy", START)
    book.authorized(2, "lab", "addr.stuck", "stuck", START)  # connected, never submits
    book.authorized(3, "lab", "addr.gone", "gone", START)
    book.share("lab", "addr.gone", "gone", 1.0, False, START + 60)
    book.closed(3, START + 61)  # lost power
    for t in range(0, 1300, 30):
        book.share("lab", "addr.busy", "busy", 1.0, False, START + t)
    assert book.summary("lab", START + 599)["silent_workers"] == 0
    at = START + 661
    summary = book.summary("lab", at, silent_limit=10)
    assert summary["silent_workers"] == 2
    listed = {w["worker"]: w for w in summary["silent"]}
    assert set(listed) == {"addr.stuck", "addr.gone"}
    assert listed["addr.gone"]["connected"] is False and listed["addr.stuck"]["connected"] is True
    assert listed["addr.gone"]["silent_seconds"] == pytest.approx(601)
    # Curtailed workers were sent away on purpose; after the end, silence counts from then.
    book.set_curtailed("lab", True, at)
    assert book.summary("lab", at + 10)["silent_workers"] == 0
    book.set_curtailed("lab", False, at + 100)
    assert book.summary("lab", at + 100 + 599)["silent_workers"] == 0
    assert book.summary("lab", at + 100 + 601)["silent_workers"] == 2


def test_forgotten_after_a_day_when_gone_and_bounded():
    book = SiteBook(programme(), START)
    book.authorized(1, "lab", "addr.gone", "gone", START)
    book.closed(1, START + 1)
    day_later = START + 24 * 3600 + 10
    for i in range(20):
        book.authorized(100 + i, "lab", f"addr.r{i}", f"r{i}", day_later)
    assert "addr.gone" not in book.sites["lab"].workers


def test_a_worker_gone_for_a_day_is_no_longer_listed_as_silent():
    book = SiteBook(programme(silent_after_minutes=10), START)
    book.authorized(1, "lab", "addr.gone", "gone", START)
    book.closed(1, START + 1)
    book.authorized(2, "lab", "addr.stuck", "stuck", START)  # connected all along, never submits
    assert book.summary("lab", START + 3600)["silent_workers"] == 2
    assert book.summary("lab", START + 24 * 3600 + 60)["silent_workers"] == 1


def test_the_allowlists_site_places_miners_no_rule_matches():
    book = SiteBook(programme(), START)
    assert book.assign("127.0.0.2", "rig", listed_site="east") == "east"
    assert book.assign("127.0.0.1", "rig", listed_site="east") == "lab"  # the config's rules come first
    assert book.assign("127.0.0.2", "rig", listed_site="elsewhere") == UNASSIGNED  # not a configured site
    assert book.assign("127.0.0.2", "rig", listed_site="") == UNASSIGNED


def test_a_pattern_class_joining_a_running_site_is_estimated_from_its_own_start():
    book = SiteBook(programme(), START - 7200)
    _feed(book, "east", ["east-s19-1"], START + 3600)  # an hour of fleet-average work
    interval = DIFFICULTY * HASHES_PER_DIFF1 / RATE
    joined = START + 3600
    book.authorized(50, "east", "addr.east-s21-9", "east-s21-9", joined)
    t = joined + interval
    while t <= joined + 60:
        book.share("east", "addr.east-s21-9", "east-s21-9", DIFFICULTY, False, t)
        t += interval
    state = book.sites["east"]
    s21 = state.rates[1].hashrate(joined + 60, 600)
    assert abs(s21 - RATE) <= 0.35 * RATE, s21 / RATE
