"""A full mempool (segwit and legacy transactions) mined through the pool into a block bitcoind accepts."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import pool_config
from tests.support.chain import (
    arpc,
    batch_rpc,
    check_pool_coinbase,
    connect_miner,
    latest_job_on,
    mine_block_on,
    wait_job_on,
    wait_tip,
    wait_until,
)

pytestmark = pytest.mark.integration

N_BECH32_UTXOS = 120
N_LEGACY_UTXOS = 100
FEE = Decimal("0.00010000")
AMOUNT = Decimal("0.10000000")


def _prepare_utxos(node) -> list[dict]:
    """Mature coins in 'pool', fan them out into many confirmed UTXOs of a second wallet, half of them legacy."""
    node.ensure_wallet("spender")
    miner_addr = node.rpc("getnewaddress", wallet="pool")
    node.rpc("generatetoaddress", 101, miner_addr)
    bech32 = batch_rpc(node, [("getnewaddress", ["", "bech32"])] * N_BECH32_UTXOS, wallet="spender")
    legacy = batch_rpc(node, [("getnewaddress", ["", "legacy"])] * N_LEGACY_UTXOS, wallet="spender")
    node.rpc("sendmany", "", {a: AMOUNT for a in bech32 + legacy}, wallet="pool")
    node.rpc("generatetoaddress", 1, miner_addr)
    utxos = node.rpc("listunspent", 1, 9999999, bech32 + legacy, wallet="spender")
    assert len(utxos) == N_BECH32_UTXOS + N_LEGACY_UTXOS, len(utxos)
    assert node.rpc("getrawmempool") == []
    return utxos


def _spend_each(node, utxos: list[dict]) -> list[str]:
    """One transaction per UTXO, to alternately bech32 and legacy destinations; returns the txids."""
    kinds = ["bech32", "legacy"] * (len(utxos) // 2 + 1)
    dests = batch_rpc(node, [("getnewaddress", ["", kinds[i]]) for i in range(len(utxos))], wallet="pool")
    raws = batch_rpc(
        node,
        [
            ("createrawtransaction", [[{"txid": u["txid"], "vout": u["vout"]}], {dests[i]: u["amount"] - FEE}])
            for i, u in enumerate(utxos)
        ],
    )
    signed = batch_rpc(node, [("signrawtransactionwithwallet", [raw]) for raw in raws], wallet="spender")
    assert all(s["complete"] for s in signed)
    return batch_rpc(node, [("sendrawtransaction", [s["hex"]]) for s in signed])


@pytest.mark.one_process("reads the one process's job book")
async def test_mempool_of_200_txs_mined_through_pool(regtest, tmp_path: Path):
    from pool.app import PoolApp

    utxos = await asyncio.to_thread(_prepare_utxos, regtest)
    legacy_utxos = [u for u in utxos if u["scriptPubKey"].startswith("76a914")]
    assert len(legacy_utxos) == N_LEGACY_UTXOS

    app = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / "pool"))
    await app.start()
    miner = None
    try:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        miner = await connect_miner(app.server.port, user)
        tip = await arpc(regtest, "getbestblockhash")
        first = await wait_job_on(miner, tip)
        assert first.branch == []  # empty mempool: the coinbase is the only transaction

        txids = await asyncio.to_thread(_spend_each, regtest, utxos)
        assert len(set(txids)) == len(utxos)
        mempool = await arpc(regtest, "getrawmempool", True)
        assert len(mempool) >= 200
        witness = [t for t, e in mempool.items() if e["wtxid"] != t]
        no_witness = [t for t, e in mempool.items() if e["wtxid"] == t]
        assert len(witness) >= N_BECH32_UTXOS and len(no_witness) >= N_LEGACY_UTXOS, (len(witness), len(no_witness))

        # bitcoind serves a cached template for 5 s after the last one unless the tip moved, so ask the pool
        # to refetch until the miner receives work carrying the mempool (bounded).
        before = len(miner.jobs)

        async def refreshed() -> bool:
            if any(j.branch for j in miner.jobs[before:]):
                return True
            assert await asyncio.wait_for(app.source.fetch("test"), 30)
            await asyncio.sleep(0.05)
            return any(j.branch for j in miner.jobs[before:])

        await wait_until(refreshed, 20, interval=0.5, what="notify carrying the mempool")
        job = latest_job_on(miner, tip)
        assert job is not None and len(job.branch) == 8  # ceil(log2(1 + 220))
        assert len(app.coordinator.prepared.template.transactions) == len(txids)

        # The block the pool would submit for this job (with any nonce) passes bitcoind's full validity check.
        pool_job = app.coordinator.book.get(job.job_id)
        en2 = b"\x00" * miner.extranonce2_size
        header = miner.header_for(job, en2, int(job.ntime, 16), 0)
        block_hex = pool_job.block_bytes(header, miner.extranonce1, en2).hex()
        proposal = await arpc(regtest, "getblocktemplate", {"mode": "proposal", "data": block_hex, "rules": ["segwit"]})
        assert proposal is None, proposal

        started = time.monotonic()
        reply, block_hash, mined_job = await mine_block_on(miner, tip)
        assert reply.get("result") is True, reply
        assert mined_job.job_id == job.job_id or mined_job.branch
        await wait_tip(regtest, block_hash, timeout=15)
        block = await check_pool_coinbase(regtest, block_hash, app.config.payout.pool_address)
        assert len(block["tx"]) >= 201
        in_block = {tx["txid"] for tx in block["tx"][1:]}
        assert set(txids) <= in_block
        assert any(tx["txid"] != tx["hash"] for tx in block["tx"][1:])  # witness txs
        assert any(tx["txid"] == tx["hash"] for tx in block["tx"][1:])  # legacy txs
        assert await arpc(regtest, "getrawmempool") == []
        assert sum(Decimal(str(tx["fee"])) for tx in block["tx"][1:]) == FEE * len(txids)

        # The pool's own block file holds the exact block bitcoind now has.
        files = list((tmp_path / "pool" / "blocks").glob(f"*{block_hash}*.hex"))
        assert files, list((tmp_path / "pool" / "blocks").iterdir())
        saved = files[0].read_text().split("\n")[2]
        assert saved == await arpc(regtest, "getblock", block_hash, 0)
        assert time.monotonic() - started < 30
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()
