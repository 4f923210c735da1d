"""Vardiff against deterministic simulated miners.

A miner of hashrate H at difficulty D finds one share every D * 2**32 / H seconds (the expectation, used
as the exact arrival time). As on the server, a retarget sends new work at once, so shares after it carry
the new difficulty, and ``idle_check`` runs every 5 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pool.mining.vardiff import Vardiff, VardiffConfig

CFG = VardiffConfig(start=1.0, minimum=0.0001, maximum=2.0**40, target_interval=10.0, retarget_seconds=30.0)


def ideal(hashrate: float, cfg: VardiffConfig = CFG) -> float:
    return hashrate * cfg.target_interval / 2**32


@dataclass
class Run:
    vardiff: Vardiff
    shares: list[tuple[float, float]] = field(default_factory=list)  # (time, difficulty credited)
    changes: list[tuple[float, float]] = field(default_factory=list)  # (time, new difficulty)

    def first_within(self, target: float, factor: float = 2.0) -> float | None:
        """Time of the first change (or start) after which difficulty is within ``factor`` of ``target``."""
        if target / factor <= self.vardiff.config.start <= target * factor and not self.changes:
            return 0.0
        for t, d in self.changes:
            if target / factor <= d <= target * factor:
                return t
        return None


def simulate(hashrate: float, until: float, cfg: VardiffConfig = CFG, start: float | None = None, vardiff: Vardiff | None = None, t0: float = 0.0) -> Run:
    v = vardiff or Vardiff(cfg, t0, start=start)
    run = Run(v)
    diff = v.difficulty
    now = t0

    def interval(d: float) -> float:
        return d * 2**32 / hashrate

    next_share = now + interval(diff)
    next_idle = now + 5.0
    while True:
        if next_idle < next_share:
            now = next_idle
            if now > until:
                break
            next_idle += 5.0
            new = v.idle_check(now)
        else:
            now = next_share
            if now > until:
                break
            run.shares.append((now, diff))
            new = v.record_share(diff, now)
            next_share = now + interval(diff)
        if new is not None:
            assert new == v.difficulty
            diff = new
            next_share = now + interval(diff)
            run.changes.append((now, new))
    return run


def test_fast_asic_ramps_up_quickly() -> None:
    # 100 TH/s starting at difficulty 1: ideal difficulty ~232,831 (one share per 10 s).
    hashrate = 100e12
    run = simulate(hashrate, until=120.0)
    reached = run.first_within(ideal(hashrate))
    # Measured: x16 steps within the first second (16, 256, 4096, 65536), then the first 30 s retarget lands on
    # the ideal at t = 31.7 s.
    assert reached is not None and reached <= 35.0
    assert run.vardiff.difficulty == pytest.approx(ideal(hashrate), rel=0.3)
    # The flood is short: fewer than 40 shares before the miner is within 2x.
    assert sum(1 for t, _ in run.shares if t <= reached) < 40


def test_slow_cpu_miner_comes_down() -> None:
    # 5 MH/s (a CPU miner) starting at difficulty 1 would need ~14 minutes per share: idle checks quarter it.
    hashrate = 5e6
    run = simulate(hashrate, until=600.0)
    reached = run.first_within(ideal(hashrate))
    assert reached is not None and reached <= 130.0  # measured: 120 s (three idle checks: 1 -> 1/4 -> 1/16 -> 1/64)
    assert ideal(hashrate) / 2 <= run.vardiff.difficulty <= ideal(hashrate) * 2
    gaps = [b[0] - a[0] for a, b in zip(run.shares, run.shares[1:], strict=False) if a[0] > reached]
    assert gaps and all(5.0 <= g <= 20.0 for g in gaps)


@pytest.mark.parametrize("hashrate", [5e6, 1e9, 14e12, 100e12, 1e15])
def test_stays_within_2x_after_convergence(hashrate: float) -> None:
    run = simulate(hashrate, until=4000.0)
    reached = run.first_within(ideal(hashrate))
    assert reached is not None and reached < 300
    later = [d for t, d in run.changes if t > reached]
    assert all(ideal(hashrate) / 2 <= d <= ideal(hashrate) * 2 for d in later)


@pytest.mark.parametrize("hashrate", [5e6, 1e9, 100e12])
def test_no_oscillation_after_convergence(hashrate: float) -> None:
    run = simulate(hashrate, until=4000.0)
    reached = run.first_within(ideal(hashrate))
    assert reached is not None
    # Once within 2x of ideal, a miner of constant hashrate must keep its difficulty (200+ shares).
    assert len([t for t, _ in run.shares if t > reached]) > 200
    assert [c for c in run.changes if c[0] > reached] == []


def test_steady_miner_at_ideal_is_left_alone_for_one_window() -> None:
    hashrate = 1e12
    start = ideal(hashrate)
    run = simulate(hashrate, until=300.0, start=start)  # 30 shares: fewer than the 32-share window
    assert run.changes == []
    assert run.vardiff.difficulty == start


def test_within_tolerance_no_change() -> None:
    cfg = VardiffConfig(start=1.0, target_interval=10.0, retarget_seconds=30.0, tolerance=0.3)
    v = Vardiff(cfg, 0.0)
    # 1.25x the wanted rate: inside +-30 %.
    assert [v.record_share(1.0, 8.0 * i) for i in range(1, 10)] == [None] * 9
    assert v.difficulty == 1.0


def test_retarget_step_is_bounded() -> None:
    cfg = VardiffConfig(start=1.0, minimum=1e-6, max_step=16.0)
    v = Vardiff(cfg, 0.0)
    # 4 shares in 0.4 s -> estimated ideal 100: fast start, but one step is at most x16.
    results = [v.record_share(1.0, 0.1 * i) for i in range(1, 5)]
    assert results[:3] == [None, None, None]
    assert results[3] == 16.0


def test_maximum_respected() -> None:
    cfg = VardiffConfig(start=1.0, minimum=1.0, maximum=1e6)
    run = simulate(1e16, until=200.0, cfg=cfg)  # ideal ~2.3e7, above the maximum
    assert run.vardiff.difficulty == 1e6
    assert all(d <= 1e6 for _, d in run.changes)


def test_minimum_respected() -> None:
    cfg = VardiffConfig(start=1.0, minimum=0.5, maximum=1000.0)
    run = simulate(1e3, until=2000.0, cfg=cfg)  # hopelessly slow
    assert run.vardiff.difficulty == 0.5
    assert all(d >= 0.5 for _, d in run.changes)


def test_start_and_suggest_are_clamped() -> None:
    cfg = VardiffConfig(start=1.0, minimum=0.01, maximum=100.0)
    assert Vardiff(cfg, 0.0, start=1e-9).difficulty == 0.01
    assert Vardiff(cfg, 0.0, start=1e9).difficulty == 100.0
    v = Vardiff(cfg, 0.0)
    assert v.suggest(1e6, 1.0) == 100.0
    assert v.suggest(1e-6, 2.0) == 0.01


def test_suggest_is_not_a_floor() -> None:
    hashrate = 1e9  # ideal ~2.33
    v = Vardiff(CFG, 0.0)
    assert v.suggest(1000.0, 0.0) == 1000.0
    run = simulate(hashrate, until=3000.0, vardiff=v)
    assert v.difficulty < 1000.0
    assert ideal(hashrate) / 2 <= v.difficulty <= ideal(hashrate) * 2
    assert run.changes


def test_suggest_below_ideal_is_raised_again() -> None:
    hashrate = 1e12  # ideal ~2328
    v = Vardiff(CFG, 0.0)
    v.suggest(0.001, 0.0)
    simulate(hashrate, until=300.0, vardiff=v)
    assert ideal(hashrate) / 2 <= v.difficulty <= ideal(hashrate) * 2


def test_fix_disables_retargeting() -> None:
    v = Vardiff(CFG, 0.0)
    assert v.fix(64.0) == 64.0
    assert v.fixed
    run = simulate(100e12, until=500.0, vardiff=v)  # far too fast for difficulty 64
    assert run.changes == []
    assert v.difficulty == 64.0
    assert v.idle_check(10_000.0) is None
    assert v.suggest(1.0, 10_001.0) == 64.0
    assert v.difficulty == 64.0


def test_fix_is_clamped() -> None:
    v = Vardiff(VardiffConfig(minimum=1.0, maximum=10.0), 0.0)
    assert v.fix(1e9) == 10.0


def test_idle_check_lowers_difficulty() -> None:
    cfg = VardiffConfig(start=64.0, minimum=1.0, target_interval=10.0, retarget_seconds=30.0)
    v = Vardiff(cfg, 0.0)
    quiet = max(cfg.retarget_seconds, 4 * cfg.target_interval)  # 40 s
    assert v.idle_check(quiet - 1) is None
    assert v.idle_check(quiet) == 16.0
    assert v.idle_check(quiet + 1) is None  # the quiet period restarts
    assert v.idle_check(2 * quiet) == 4.0
    assert v.idle_check(3 * quiet) == 1.0
    assert v.idle_check(4 * quiet) is None  # at the minimum: nothing to lower
    assert v.difficulty == 1.0


def test_idle_check_counts_from_last_share() -> None:
    cfg = VardiffConfig(start=64.0, minimum=1.0)
    v = Vardiff(cfg, 0.0)
    v.record_share(64.0, 35.0)
    assert v.idle_check(50.0) is None  # only 15 s since the share
    assert v.idle_check(75.0) == 16.0


def test_minimum_difficulty_is_a_floor_for_that_miner() -> None:
    """BIP 310 minimum-difficulty: vardiff never goes below what the miner declared (within pool bounds)."""
    cfg = VardiffConfig(start=1.0, minimum=0.001, maximum=1000.0, target_interval=10.0, retarget_seconds=30.0)
    v = Vardiff(cfg, now=0.0)
    assert v.set_floor(64.0) == 64.0
    assert v.clamp(1.0) == 64.0
    assert v.suggest(2.0, now=1.0) == 64.0
    # A miner far too slow for its floor is not lowered beneath it.
    assert v.idle_check(now=10_000.0) is None
    assert v.difficulty == 64.0
    assert v.set_floor(1e9) == 1000.0  # capped by the pool's maximum
