"""The hashrate estimator (pool, worker; the site's is tested in test_sites.py) against shares of a known rate.

Mainnet-like numbers: 100 TH/s workers at share difficulty 65,536 submit about one share every 2.8 s, so a
ten-minute window holds ~210 shares per worker. Times are a fake clock (plain floats).
"""

from __future__ import annotations

import random

import pytest

from pool.mining.stats import HASHES_PER_DIFF1, PoolStats, RateWindow

DIFFICULTY = 65536.0
WORKER_RATE = 100e12  # hashes per second
START = 1_800_000_017.0  # not on a minute boundary


def _feed(stats: PoolStats, workers: int, until: float, rng: random.Random | None = None) -> None:
    """Every worker authorizes at START and submits shares of DIFFICULTY at WORKER_RATE until ``until``:
    evenly spaced (with a per-worker phase), or with exponential gaps (a real miner's) when ``rng`` is given."""
    interval = DIFFICULTY * HASHES_PER_DIFF1 / WORKER_RATE
    events: list[tuple[float, int]] = []
    for w in range(workers):
        stats.seen("addr", f"w{w}", START)
        t = START + (rng.expovariate(1 / interval) if rng else interval * (w + 1) / workers)
        while t <= until:
            events.append((t, w))
            t += rng.expovariate(1 / interval) if rng else interval
    for t, w in sorted(events):
        stats.accepted("addr", f"w{w}", DIFFICULTY, t)


def _within(estimate: float, truth: float, tolerance: float) -> bool:
    return abs(estimate - truth) <= tolerance * truth


def test_pool_estimate_sensible_after_the_first_minute_not_ten_times_low():
    stats = PoolStats()
    _feed(stats, 1, START + 60)
    estimate = stats.pool_hashrate(START + 60)
    # The old estimator divided one minute of shares by the ten-minute window: ~10 TH/s for a 100 TH/s miner.
    assert _within(estimate, WORKER_RATE, 0.35), estimate / WORKER_RATE


@pytest.mark.parametrize("workers", [1, 10])
def test_pool_and_worker_estimates_within_ten_percent_after_ten_minutes(workers: int):
    # Read at many instants across the minute (bucket boundaries move under the window) after ten minutes.
    end = START + 1500
    t = START + 600
    while t <= end:
        pool = _estimate_at(workers, t)
        assert _within(pool.pool_hashrate(t), workers * WORKER_RATE, 0.10), (t - START, pool.pool_hashrate(t))
        for w in pool.workers.values():
            assert _within(w.hashrate(t, pool.window), WORKER_RATE, 0.10), (t - START, w.name)
        t += 37


def _estimate_at(workers: int, t: float) -> PoolStats:
    stats = PoolStats()
    _feed(stats, workers, t)
    return stats


def test_every_estimate_after_the_first_minute_is_sensible():
    for seconds in range(60, 661, 20):
        stats = _estimate_at(1, START + seconds)
        assert _within(stats.pool_hashrate(START + seconds), WORKER_RATE, 0.35), seconds


def test_random_arrivals_of_a_farm_within_ten_percent():
    rng = random.Random(20261129)
    stats = PoolStats()
    _feed(stats, 20, START + 900, rng)
    assert _within(stats.pool_hashrate(START + 900), 20 * WORKER_RATE, 0.10)
    first_minute = PoolStats()
    _feed(first_minute, 20, START + 60, random.Random(7))
    assert _within(first_minute.pool_hashrate(START + 60), 20 * WORKER_RATE, 0.35)


def test_a_worker_back_after_a_long_silence_is_observed_afresh():
    stats = PoolStats()
    _feed(stats, 1, START + 300)
    back = START + 4000  # gone for over an hour
    stats.seen("addr", "w0", back)
    interval = DIFFICULTY * HASHES_PER_DIFF1 / WORKER_RATE
    t = back + interval
    while t <= back + 90:
        stats.accepted("addr", "w0", DIFFICULTY, t)
        t += interval
    assert _within(stats.pool_hashrate(back + 90), WORKER_RATE, 0.35)


def test_no_shares_no_rate_and_no_spike_right_after_a_start():
    window = RateWindow(started=START)
    assert window.hashrate(START + 5, 600) == 0.0
    window.add(START + 1, DIFFICULTY, 600)
    # One share a second after the start is not read as 65536 × 2**32 per second.
    assert window.hashrate(START + 1, 600) <= DIFFICULTY * HASHES_PER_DIFF1 / 30


def test_a_stopped_worker_decays_to_zero_after_the_window():
    stats = PoolStats()
    _feed(stats, 1, START + 900)
    assert stats.pool_hashrate(START + 900 + 700) == 0.0
    assert stats.active_workers(START + 900 + 700) == 0
