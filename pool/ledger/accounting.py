"""Payout maths, pure and in integer satoshis: PPLNS splits, PPS/FPPS share value, SOLO fee.

Rounding rule (the same for every scheme, so an auditor can recompute any block):
- the pool fee is ``floor(reward × fee_basis_points / 10000)``;
- each worker's credit is ``floor(distributable × weight / total_weight)``, computed with exact fractions;
- the satoshis that flooring leaves over (fewer than the number of workers) go to the pool fee.
Hence for every block: sum(credits) + fee == reward, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction


def fee_basis_points(fee_percent: float) -> int:
    """Fee as integer basis points (1 % = 100), so no float reaches the satoshi arithmetic."""
    return round(fee_percent * 100)


@dataclass(frozen=True, slots=True)
class WindowShare:
    """A share as PPLNS sees it: who, and how much difficulty it carried."""

    share_id: int
    address: str
    worker: str
    difficulty: float


@dataclass(frozen=True, slots=True)
class Split:
    """How one block's reward is divided."""

    reward: int
    fee: int
    credits: dict[tuple[str, str], int]  # (address, worker) -> satoshis
    window_difficulty: Fraction
    first_share_id: int | None
    last_share_id: int | None

    def check(self) -> None:
        if sum(self.credits.values()) + self.fee != self.reward:
            raise AssertionError("credits + fee != reward")
        if any(v < 0 for v in self.credits.values()) or self.fee < 0:
            raise AssertionError("negative amount in split")


def pplns_window(shares_newest_first: Iterable[WindowShare], window: Fraction) -> list[tuple[WindowShare, Fraction]]:
    """The last ``window`` difficulty of shares, newest first; the oldest share counts only partly if it
    straddles the window's edge."""
    taken: list[tuple[WindowShare, Fraction]] = []
    remaining = window
    for share in shares_newest_first:
        if remaining <= 0:
            break
        weight = min(Fraction(share.difficulty), remaining)
        if weight > 0:
            taken.append((share, weight))
            remaining -= weight
    return taken


def split_reward(reward: int, fee_bp: int, weights: Sequence[tuple[tuple[str, str], Fraction]]) -> tuple[int, dict[tuple[str, str], int]]:
    """Split ``reward`` over weighted workers under the module's rounding rule; returns (fee, credits)."""
    if reward < 0:
        raise ValueError("reward must be non-negative")
    if not 0 <= fee_bp <= 10_000:
        raise ValueError("fee must be 0..100 %")
    fee = reward * fee_bp // 10_000
    distributable = reward - fee
    per_worker: dict[tuple[str, str], Fraction] = {}
    for key, weight in weights:
        per_worker[key] = per_worker.get(key, Fraction(0)) + weight
    total = sum(per_worker.values(), Fraction(0))
    if total <= 0:
        return reward, {}
    credits = {key: int(distributable * w // total) for key, w in per_worker.items()}
    fee += distributable - sum(credits.values())
    return fee, credits


def pplns_split(
    reward: int,
    fee_bp: int,
    shares_newest_first: Iterable[WindowShare],
    network_difficulty: float,
    factor: float,
) -> Split:
    """PPLNS: the reward (minus fee) over the last N = factor × network difficulty of shares."""
    window = Fraction(factor) * Fraction(network_difficulty)
    taken = pplns_window(shares_newest_first, window)
    return pplns_split_weighted(
        reward, fee_bp, [((s.address, s.worker), w) for s, w in taken],
        taken[-1][0].share_id if taken else None, taken[0][0].share_id if taken else None,
    )


def pplns_split_weighted(reward: int, fee_bp: int, weights: Sequence[tuple[tuple[str, str], Fraction]],
                         first_share_id: int | None, last_share_id: int | None) -> Split:
    """PPLNS from the window's weights already summed (per share or per worker: the split is the same), as the
    ledger computes them from running totals without reading every share."""
    fee, credits = split_reward(reward, fee_bp, weights)
    split = Split(
        reward=reward,
        fee=fee,
        credits=credits,
        window_difficulty=sum((w for _, w in weights), Fraction(0)),
        first_share_id=first_share_id,
        last_share_id=last_share_id,
    )
    split.check()
    return split


def pps_value(share_difficulty: float, network_difficulty: float, subsidy: int, fee_bp: int,
              expected_fees: int = 0) -> int:
    """Satoshis one share earns under PPS (``expected_fees`` = 0) or FPPS: floor of the exact value."""
    if network_difficulty <= 0:
        raise ValueError("network difficulty must be positive")
    value = Fraction(share_difficulty) / Fraction(network_difficulty) * (subsidy + expected_fees)
    return int(value * (10_000 - fee_bp) // 10_000)


def block_subsidy(height: int, halving_interval: int = 210_000) -> int:
    """Block subsidy in satoshis at ``height`` (regtest halves every 150 blocks)."""
    halvings = height // halving_interval
    return 0 if halvings >= 64 else (50 * 100_000_000) >> halvings


def solo_split(reward: int, fee_bp: int, finder: tuple[str, str], fee_paid: int | None = None) -> Split:
    """SOLO: the finder takes the block minus the fee; recorded for the audit, paid in the coinbase.

    ``fee_paid`` is the fee output the coinbase actually carries (none without a pool address): the record
    must say what the coinbase pays, not what the fee setting would have taken.
    """
    fee = reward * fee_bp // 10_000 if fee_paid is None else fee_paid
    split = Split(reward, fee, {finder: reward - fee}, Fraction(0), None, None)
    split.check()
    return split
