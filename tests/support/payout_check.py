"""Independent recomputation of PPLNS credits from a ledger file, for the payout tests.

Reads only the ``shares`` and ``blocks`` tables and redoes the split with exact fractions, following the
documented rounding rule (fee = floor(reward × bp / 10000); each worker floor(distributable × weight / total);
leftover satoshis to the fee). The window of a block ends at the share whose hash *is* the block hash (the
share that found it), so the ledger's own ``last_share_id`` is not trusted.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pool.ledger.pg import open_reader
from tests.support.chain import (
    DIFF1,
    arpc,
    bits_target,
    display_hash,
    latest_job_on,
    share_target,
    solve_where,
    wait_job_on,
    wait_tip,
)
from tests.support.miner import NotifyJob, TestMiner


def recompute_pplns(path: Any, fee_bp: int, factor: float,
                    chain: dict[str, tuple[int, float]] | None = None) -> dict[str, tuple[int, dict[tuple[str, str], int]]]:
    """{block_hash: (fee, {(address, worker): credit})} for every PPLNS block in the ledger.

    ``chain`` ({block_hash: (reward, network difficulty)} as read from bitcoind) replaces the ledger's own
    reward and network difficulty, so a wrong value recorded by the pool cannot cancel out."""
    conn = open_reader(path)
    try:
        shares = conn.execute("SELECT id, address, worker, difficulty, block_hash FROM shares ORDER BY id").fetchall()
        blocks = conn.execute(
            "SELECT block_hash, reward, network_difficulty FROM blocks WHERE scheme='pplns'").fetchall()
    finally:
        conn.close()
    if chain is not None:
        blocks = [(h, *chain[h]) for h, _, _ in blocks if h in chain]
    index_of_hash = {row[4]: i for i, row in enumerate(shares)}
    out: dict[str, tuple[int, dict[tuple[str, str], int]]] = {}
    for block_hash, reward, network_difficulty in blocks:
        end = index_of_hash[block_hash]  # the finding share is the newest share of its window
        remaining = Fraction(factor) * Fraction(network_difficulty)
        weights: dict[tuple[str, str], Fraction] = {}
        i = end
        while i >= 0 and remaining > 0:
            _, address, worker, difficulty, _ = shares[i]
            take = min(Fraction(difficulty), remaining)
            weights[(address, worker)] = weights.get((address, worker), Fraction(0)) + take
            remaining -= take
            i -= 1
        fee = reward * fee_bp // 10_000
        distributable = reward - fee
        total = sum(weights.values(), Fraction(0))
        credits = {k: (distributable * w.numerator * total.denominator) // (w.denominator * total.numerator)
                   for k, w in weights.items()} if total else {}
        fee = reward - sum(credits.values())
        out[block_hash] = (fee, credits)
    return out


def credits_by_address(splits: dict[str, tuple[int, dict[tuple[str, str], int]]],
                       block_hashes: set[str] | None = None) -> dict[str, int]:
    """Sum recomputed credits per payout address, over ``block_hashes`` (all blocks when None)."""
    totals: dict[str, int] = {}
    for block_hash, (_, credits) in splits.items():
        if block_hashes is not None and block_hash not in block_hashes:
            continue
        for (address, _), amount in credits.items():
            totals[address] = totals.get(address, 0) + amount
    return totals


# ---- controlled mining through the pool --------------------------------------------------------------------

ERR_STALE = 21


async def submit_share_on(miner: TestMiner, tip: str, block: bool,
                          timeout: float = 10.0) -> tuple[dict[str, Any], str, NotifyJob]:
    """Submit one share on ``tip`` that is a block (``block``) or deliberately *not* a block.

    With share difficulties below the network difficulty almost every regtest hash would be a block; choosing
    the nonce lets a test decide exactly which shares find blocks. Returns (reply, share hash display hex, job).
    """
    await wait_job_on(miner, tip, timeout)
    job = latest_job_on(miner, tip)
    assert job is not None
    share_t = share_target(miner.job_difficulty.get(job.job_id, miner.difficulty))
    net_t = bits_target(job.nbits)
    if block:
        limit = min(share_t, net_t)
        en2, ntime, nonce, h = solve_where(miner, job, lambda v: v <= limit)
    else:
        if share_t <= net_t:
            raise ValueError("share difficulty is not below the network difficulty: every share is a block")
        en2, ntime, nonce, h = solve_where(miner, job, lambda v: net_t < v <= share_t)
    reply = await miner.submit(job, en2, ntime, nonce)
    return reply, display_hash(h), job


async def mine_share(miner: TestMiner, node: Any, block: bool = False, attempts: int = 5) -> str:
    """A share on bitcoind's current tip, accepted by the pool (a stale answer is retried on the new tip);
    a block share also waits until bitcoind has the block as its tip. Returns the share's hash."""
    last: dict[str, Any] = {}
    for _ in range(attempts):
        tip = await arpc(node, "getbestblockhash")
        reply, share_hash, _ = await submit_share_on(miner, tip, block)
        if reply.get("result") is True:
            if block:
                await wait_tip(node, share_hash, timeout=15)
            return share_hash
        last = reply
        if not reply.get("error") or reply["error"][0] != ERR_STALE:
            break
        await asyncio.sleep(0.3)
    raise AssertionError(f"share not accepted: {last}")


def btc_to_sats(value: Decimal | float | int | str) -> int:
    return int((Decimal(str(value)) * 100_000_000).to_integral_exact())


async def chain_reward_and_difficulty(node: Any, block_hash: str) -> tuple[int, int, float]:
    """(coinbase output value, fees of the block's transactions, network difficulty from the header's bits),
    all read from bitcoind: what the ledger's reward and PPLNS window must be based on."""
    block = await arpc(node, "getblock", block_hash, 2)
    coinbase_value = sum(btc_to_sats(o["value"]) for o in block["tx"][0]["vout"])
    fees = sum(btc_to_sats(tx["fee"]) for tx in block["tx"][1:])
    header = await arpc(node, "getblockheader", block_hash)
    target = bits_target(header["bits"])
    difficulty = DIFF1 / target
    assert abs(difficulty - float(header["difficulty"])) <= 1e-9 * difficulty, (difficulty, header["difficulty"])
    return coinbase_value, fees, difficulty
