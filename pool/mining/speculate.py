"""An empty-block template on a new tip, built from the tip's header before bitcoind's full template is ready.

When ZMQ announces a block, fetching and decoding the next full template (megabytes of JSON on mainnet) takes
tens of milliseconds, and every miner hashes stale work until it arrives. The coinbase-only successor needs
much less: the new tip's hash, height, ``bits`` and median time past (one ``getblockheader``), plus what the
current template already says (version, rules, subsidy schedule). Miners get it at once as a clean job; the full
template follows as a non-clean update on the same tip.

Every field is one consensus allows for the next block, or nothing is built: on networks whose next ``bits``
cannot be known from the tip alone (testnet's 20-minute rule, a retarget boundary) the function returns None
and the pool waits for the full template as before.
"""

from __future__ import annotations

from typing import Any

from pool.ledger.accounting import block_subsidy
from pool.mining.jobs import BlockTemplate

RETARGET_INTERVAL = 2016
# Halving intervals by the config's network names (bitcoind's chainparams); regtest halves every 150 blocks.
HALVING_INTERVAL = {"main": 210_000, "signet": 210_000, "regtest": 150}
# Networks whose next block's bits follow from the tip: no minimum-difficulty exception (testnet3/testnet4 have
# one, which depends on the next block's time) and, for regtest, no retargeting at all.
_FIXED_BITS = {"regtest"}


class HeaderError(ValueError):
    """getblockheader gave something we cannot build on."""


def _header_fields(header: Any) -> tuple[bytes, int, int, int]:
    try:
        tip = bytes.fromhex(header["hash"])[::-1]
        height = int(header["height"])
        bits = int(header["bits"], 16)
        median_time = int(header["mediantime"])
    except (KeyError, TypeError, ValueError) as exc:
        raise HeaderError(f"malformed getblockheader result: {exc!r}") from exc
    if len(tip) != 32:
        raise HeaderError("malformed getblockheader result: hash is not 32 bytes")
    return tip, height, bits, median_time


def empty_successor(current: BlockTemplate, header: Any, network: str, now: int) -> BlockTemplate | None:
    """The coinbase-only template on top of ``header`` (bitcoind's ``getblockheader`` of the new tip), or None
    when one cannot be built safely (unknown network rules, retarget boundary, a tip that is not newer).

    ``current`` is the template being mined (any tip): it gives the version and rules, and serves as a check
    on our subsidy schedule: if its coinbase value minus its fees is not the subsidy we compute for its height,
    our idea of this network is wrong and nothing is built.
    """
    interval = HALVING_INTERVAL.get(network)
    if interval is None:
        return None
    tip, tip_height, tip_bits, median_time = _header_fields(header)
    height = tip_height + 1
    if height <= current.height - 1 or tip == current.prevhash:
        return None  # an old tip (a late announcement) or the one being mined already
    if network not in _FIXED_BITS and height % RETARGET_INTERVAL == 0:
        return None  # new bits: only bitcoind computes them
    if current.coinbase_value - current.total_fees != block_subsidy(current.height, interval):
        return None
    mintime = median_time + 1
    return BlockTemplate(
        height=height,
        version=current.version,
        prevhash=tip,
        bits=current.bits if network in _FIXED_BITS else tip_bits,
        curtime=max(now, mintime),
        mintime=mintime,
        coinbase_value=block_subsidy(height, interval),
        transactions=(),
        default_witness_commitment=None,
        longpollid=None,
        rules=current.rules,
        total_fees=0,
    )
