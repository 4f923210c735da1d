"""Payout maths (pool.ledger.accounting): exact satoshi splits, the PPLNS window, PPS/SOLO values, subsidy.

Property tests check every split against an independent exact-fraction computation written here.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pool.ledger.accounting import (
    WindowShare,
    block_subsidy,
    fee_basis_points,
    pplns_split,
    pplns_window,
    pps_value,
    solo_split,
    split_reward,
)

COIN = 100_000_000
MAX_MONEY = 21_000_000 * COIN

ADDRESSES = ["bcrt1qaaa", "bcrt1qbbb", "bcrt1qccc", "bcrt1qddd"]
WORKERS = ["", "w1", "w2", "rig-3"]

difficulties = st.one_of(
    st.floats(min_value=1e-12, max_value=1e-6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=0.001, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.integers(min_value=1, max_value=2**20).map(float),
    st.sampled_from([1e-11, 0.5, 1.0, 1024.0, 0.1]),
)


@st.composite
def share_sets(draw: st.DrawFn) -> list[WindowShare]:
    n = draw(st.integers(min_value=0, max_value=60))
    shares = []
    for i in range(n):
        shares.append(
            WindowShare(
                share_id=i + 1,
                address=draw(st.sampled_from(ADDRESSES)),
                worker=draw(st.sampled_from(WORKERS)),
                difficulty=draw(difficulties),
            )
        )
    return shares


def exact_window(shares_newest_first: list[WindowShare], n: Fraction) -> list[tuple[WindowShare, Fraction]]:
    """Independent PPLNS window: walk newest first, take whole shares, the last one only as far as N."""
    out = []
    used = Fraction(0)
    for s in shares_newest_first:
        if used >= n:
            break
        d = Fraction(s.difficulty)
        take = d if used + d <= n else n - used
        if take > 0:
            out.append((s, take))
            used += take
    return out


@settings(max_examples=300, deadline=None)
@given(
    shares=share_sets(),
    reward=st.one_of(st.integers(min_value=0, max_value=MAX_MONEY), st.integers(min_value=0, max_value=1000)),
    fee_bp=st.integers(min_value=0, max_value=10_000),
    network_difficulty=st.one_of(
        st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False),
        st.just(4.656542373906925e-10),
    ),
    factor=st.floats(min_value=0.01, max_value=100, allow_nan=False, allow_infinity=False),
)
def test_pplns_split_is_exact_nonnegative_and_proportional(shares, reward, fee_bp, network_difficulty, factor):
    newest_first = list(reversed(shares))
    split = pplns_split(reward, fee_bp, newest_first, network_difficulty, factor)

    # Conservation and signs.
    assert sum(split.credits.values()) + split.fee == split.reward == reward
    assert split.fee >= 0 and all(v >= 0 for v in split.credits.values())
    assert all(isinstance(v, int) for v in split.credits.values()) and isinstance(split.fee, int)

    # The window: exactly min(N, total difficulty), the oldest share possibly partial.
    n = Fraction(factor) * Fraction(network_difficulty)
    window = exact_window(newest_first, n)
    total = sum(Fraction(s.difficulty) for s in shares)
    assert split.window_difficulty == min(n, total)
    assert split.window_difficulty == sum(w for _, w in window)
    if window:
        assert split.last_share_id == window[0][0].share_id
        assert split.first_share_id == window[-1][0].share_id
        # Every share but the oldest taken counts in full.
        for s, w in window[:-1]:
            assert w == Fraction(s.difficulty)
        assert 0 < window[-1][1] <= Fraction(window[-1][0].difficulty)
    else:
        assert split.first_share_id is None and split.last_share_id is None

    # Proportionality: each worker gets floor(distributable * weight / total) (within 1 sat of exact).
    base_fee = reward * fee_bp // 10_000
    distributable = reward - base_fee
    per_worker: dict[tuple[str, str], Fraction] = {}
    for s, w in window:
        per_worker[(s.address, s.worker)] = per_worker.get((s.address, s.worker), Fraction(0)) + w
    wtotal = sum(per_worker.values(), Fraction(0))
    if wtotal == 0:
        assert split.credits == {} and split.fee == reward
        return
    assert set(split.credits) == set(per_worker)
    for key, weight in per_worker.items():
        exact = Fraction(distributable) * weight / wtotal
        assert 0 <= exact - split.credits[key] < 1, (key, exact, split.credits[key])
    # Rounding leftovers (fewer than the number of workers) go to the fee.
    leftover = split.fee - base_fee
    assert 0 <= leftover < len(per_worker)


@settings(max_examples=200, deadline=None)
@given(
    reward=st.integers(min_value=0, max_value=MAX_MONEY),
    fee_bp=st.integers(min_value=0, max_value=10_000),
    weights=st.lists(
        st.tuples(st.tuples(st.sampled_from(ADDRESSES), st.sampled_from(WORKERS)),
                  st.fractions(min_value=Fraction(1, 10**15), max_value=10**6)),
        max_size=30,
    ),
)
def test_split_reward_conserves_and_aggregates(reward, fee_bp, weights):
    fee, credits = split_reward(reward, fee_bp, weights)
    assert fee + sum(credits.values()) == reward
    assert fee >= reward * fee_bp // 10_000
    assert all(v >= 0 for v in credits.values())
    # A worker appearing several times is credited once, on its summed weight.
    assert set(credits) == {k for k, _ in weights}


def test_window_respects_n_with_partial_oldest_share():
    shares = [WindowShare(i, "a", "w", 1.0) for i in range(1, 11)]  # ids 1..10, difficulty 1 each
    newest_first = list(reversed(shares))
    taken = pplns_window(newest_first, Fraction(7, 2))
    assert [(s.share_id, w) for s, w in taken] == [(10, 1), (9, 1), (8, 1), (7, Fraction(1, 2))]
    split = pplns_split(1000, 0, newest_first, 3.5, 1.0)
    assert split.window_difficulty == Fraction(7, 2)
    assert (split.first_share_id, split.last_share_id) == (7, 10)
    assert split.credits == {("a", "w"): 1000}


def test_pplns_two_workers_three_to_one():
    # A has 3 shares for every one of B's; window covers exactly 8 shares (6 A, 2 B).
    shares = []
    for i in range(1, 21):
        shares.append(WindowShare(i, "addrB" if i % 4 == 0 else "addrA", "w", 1e-11))
    split = pplns_split(50 * COIN, 100, list(reversed(shares)), 4e-11, 2.0)
    distributable = 50 * COIN - 50 * COIN // 100
    a = split.credits[("addrA", "w")]
    b = split.credits[("addrB", "w")]
    # Fraction(1e-11) is not exactly 1/1e11, so allow a satoshi; the ratio is 3:1.
    assert abs(a - distributable * 3 // 4) <= 1 and abs(b - distributable // 4) <= 1
    assert a + b + split.fee == 50 * COIN


def test_pplns_no_shares_all_to_pool():
    split = pplns_split(12345, 100, [], 1.0, 2.0)
    assert split.credits == {} and split.fee == 12345


def test_split_reward_rejects_bad_input():
    with pytest.raises(ValueError):
        split_reward(-1, 0, [])
    with pytest.raises(ValueError):
        split_reward(1, 10_001, [])
    with pytest.raises(ValueError):
        split_reward(1, -1, [])


def test_fee_extremes():
    shares = [WindowShare(1, "a", "", 1.0), WindowShare(2, "b", "", 1.0)]
    full = pplns_split(1001, 10_000, shares, 10.0, 1.0)
    assert full.fee == 1001 and all(v == 0 for v in full.credits.values())
    none = pplns_split(1001, 0, shares, 10.0, 1.0)
    assert sorted(none.credits.values()) == [500, 500] and none.fee == 1  # the odd satoshi goes to the pool


@given(bp=st.integers(min_value=0, max_value=10_000))
def test_fee_basis_points_round_trips_percent(bp):
    assert fee_basis_points(bp / 100) == bp


def test_fee_basis_points_examples():
    assert fee_basis_points(1.0) == 100
    assert fee_basis_points(0) == 0
    assert fee_basis_points(100) == 10_000
    assert fee_basis_points(0.29) == 29  # 0.29 * 100 == 28.999999999999996 in floats
    assert fee_basis_points(2.5) == 250
    assert isinstance(fee_basis_points(1.5), int)


@settings(max_examples=200, deadline=None)
@given(
    share_difficulty=difficulties,
    network_difficulty=st.floats(min_value=1e-12, max_value=1e14, allow_nan=False, allow_infinity=False),
    subsidy=st.integers(min_value=0, max_value=50 * COIN),
    fee_bp=st.integers(min_value=0, max_value=10_000),
    expected_fees=st.integers(min_value=0, max_value=10 * COIN),
)
def test_pps_value_is_floor_of_exact(share_difficulty, network_difficulty, subsidy, fee_bp, expected_fees):
    exact = (Fraction(share_difficulty) / Fraction(network_difficulty) * (subsidy + expected_fees)
             * Fraction(10_000 - fee_bp, 10_000))
    assert pps_value(share_difficulty, network_difficulty, subsidy, fee_bp, expected_fees) == int(exact)
    pps = pps_value(share_difficulty, network_difficulty, subsidy, fee_bp)
    fpps = pps_value(share_difficulty, network_difficulty, subsidy, fee_bp, expected_fees)
    assert 0 <= pps <= fpps


def test_pps_values():
    # A share at the network difficulty earns the block subsidy minus the fee.
    assert pps_value(1.0, 1.0, 50 * COIN, 100) == 50 * COIN * 99 // 100
    assert pps_value(0.5, 1.0, 50 * COIN, 0) == 25 * COIN
    assert pps_value(1e-11, 4.656542373906925e-10, 50 * COIN, 0) == int(
        Fraction(1e-11) / Fraction(4.656542373906925e-10) * 50 * COIN)
    assert pps_value(1.0, 3.0, 10, 0) == 3  # floor of 3.33
    # FPPS adds the expected transaction fees.
    assert pps_value(1.0, 2.0, 50 * COIN, 0, expected_fees=2 * COIN) == 26 * COIN
    with pytest.raises(ValueError):
        pps_value(1.0, 0.0, 50 * COIN, 0)


@given(reward=st.integers(min_value=0, max_value=MAX_MONEY), fee_bp=st.integers(min_value=0, max_value=10_000))
def test_solo_split(reward, fee_bp):
    split = solo_split(reward, fee_bp, ("addr", "rig"))
    assert split.fee == reward * fee_bp // 10_000
    assert split.credits == {("addr", "rig"): reward - split.fee}
    assert split.fee + sum(split.credits.values()) == reward
    assert split.first_share_id is None and split.window_difficulty == 0


def test_solo_split_values():
    split = solo_split(50 * COIN + 12345, 100, ("a", ""))
    assert split.fee == (50 * COIN + 12345) // 100
    assert split.credits[("a", "")] == 50 * COIN + 12345 - split.fee


@pytest.mark.parametrize(
    ("height", "interval", "expected"),
    [
        (0, 150, 50 * COIN),
        (149, 150, 50 * COIN),
        (150, 150, 25 * COIN),
        (299, 150, 25 * COIN),
        (300, 150, 1_250_000_000),
        (150 * 33, 150, 0),  # 50 BTC >> 33 rounds to zero satoshis
        (150 * 64, 150, 0),
        (150 * 1000, 150, 0),
        (0, 210_000, 50 * COIN),
        (209_999, 210_000, 50 * COIN),
        (210_000, 210_000, 25 * COIN),
        (420_000, 210_000, 1_250_000_000),
        (630_000, 210_000, 625_000_000),
        (840_000, 210_000, 312_500_000),
        (6_720_000, 210_000, 1),  # 32 halvings: the last satoshi
        (6_930_000, 210_000, 0),
        (210_000 * 64, 210_000, 0),
    ],
)
def test_block_subsidy_halvings(height, interval, expected):
    assert block_subsidy(height, interval) == expected


def test_block_subsidy_default_is_mainnet():
    assert block_subsidy(209_999) == 50 * COIN
    assert block_subsidy(210_000) == 25 * COIN


def test_split_check_catches_imbalance():
    from pool.ledger.accounting import Split

    with pytest.raises(AssertionError):
        Split(100, 1, {("a", ""): 98}, Fraction(0), None, None).check()
    with pytest.raises(AssertionError):
        Split(100, 101, {("a", ""): -1}, Fraction(0), None, None).check()
