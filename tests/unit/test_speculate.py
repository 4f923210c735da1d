"""The coinbase-only template on a new tip, built from the tip's header (pure logic)."""

from __future__ import annotations

import pytest

from pool.mining.jobs import PreparedTemplate, parse_template
from pool.mining.speculate import HeaderError, empty_successor
from tests.unit.helpers import make_gbt

TIP = "00" * 4 + "ab" * 28
SUBSIDY_EPOCH_4 = 312_500_000  # 3.125 BTC: mainnet heights 840,000-1,049,999


def current(height: int = 900_000, **kw: object):
    return parse_template(make_gbt(n_txs=4, height=height, bits="17034219", **kw))  # type: ignore[arg-type]


def header(height: int, bits: str = "17031abe", mediantime: int = 1_700_000_500, tip: str = TIP) -> dict:
    return {"hash": tip, "height": height, "bits": bits, "mediantime": mediantime, "time": mediantime + 600}


def test_successor_is_coinbase_only_on_the_new_tip_with_the_tips_rules() -> None:
    now = current()
    empty = empty_successor(now, header(900_000), "main", now=1_700_000_000)
    assert empty is not None
    assert empty.prevhash_hex == TIP and empty.height == 900_001
    assert empty.transactions == () and empty.total_fees == 0 and empty.default_witness_commitment is None
    assert empty.coinbase_value == SUBSIDY_EPOCH_4  # the subsidy alone: no fees without transactions
    assert empty.bits == 0x17031ABE  # not a retarget height: the tip's bits carry on
    assert empty.version == now.version and empty.rules == now.rules
    # Block time must exceed the tip's median time past; the clock wins when it is later.
    assert empty.mintime == 1_700_000_501 and empty.curtime == 1_700_000_501
    assert empty_successor(now, header(900_000), "main", now=1_800_000_000).curtime == 1_800_000_000  # type: ignore[union-attr]
    prepared = PreparedTemplate.from_template(empty)
    assert prepared.branch == () and prepared.network_difficulty > 1


def test_subsidy_halves_at_the_boundary() -> None:
    now = current(height=1_049_999)
    empty = empty_successor(now, header(1_049_999), "main", now=0)
    assert empty is not None and empty.height == 1_050_000 and empty.coinbase_value == SUBSIDY_EPOCH_4 // 2


def test_nothing_is_built_where_only_bitcoind_knows_the_next_bits() -> None:
    assert empty_successor(current(height=2016 * 450 - 1), header(2016 * 450 - 1), "main", now=0) is None
    # testnet3/testnet4: the 20-minute minimum-difficulty rule depends on the next block's time.
    assert empty_successor(current(), header(900_000), "test", now=0) is None
    assert empty_successor(current(), header(900_000), "testnet4", now=0) is None


def test_regtest_never_retargets_and_halves_every_150_blocks() -> None:
    gbt = make_gbt(n_txs=0, height=300, bits="207fffff")
    gbt["coinbasevalue"] = 5_000_000_000 >> 2
    now = parse_template(gbt)
    empty = empty_successor(now, header(2015, bits="1d00ffff"), "regtest", now=0)
    assert empty is not None and empty.height == 2016 and empty.bits == 0x207FFFFF
    assert empty.coinbase_value == 5_000_000_000 >> (2016 // 150)


def test_a_wrong_subsidy_schedule_builds_nothing() -> None:
    """If the current template's subsidy is not what we compute, our idea of the network is wrong."""
    assert empty_successor(current(height=500_000), header(500_000), "main", now=0) is None


def test_an_older_or_the_current_tip_builds_nothing() -> None:
    now = current()
    assert empty_successor(now, header(899_990), "main", now=0) is None
    same = header(899_999, tip=now.prevhash_hex)
    assert empty_successor(now, same, "main", now=0) is None
    # A competing block at the height being mined (a one-block reorg) is a new tip like any other.
    assert empty_successor(now, header(899_999), "main", now=0) is not None


@pytest.mark.parametrize("bad", [{}, {"hash": "zz", "height": 1, "bits": "1d00ffff", "mediantime": 0},
                                 {"hash": "ab", "height": 1, "bits": "1d00ffff", "mediantime": 0},
                                 {"hash": TIP, "height": "x", "bits": "1d00ffff", "mediantime": 0}])
def test_a_malformed_header_is_refused(bad: dict) -> None:
    with pytest.raises(HeaderError):
        empty_successor(current(), bad, "main", now=0)
