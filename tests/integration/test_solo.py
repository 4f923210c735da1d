"""SOLO on a real regtest bitcoind: each finder's coinbase pays its own address, the fee goes to the pool."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pool.app import PoolApp
from tests.conftest import pool_config
from tests.support.chain import arpc, connect_miner, mine_block_on, sats, subsidy, wait_tip

pytestmark = pytest.mark.integration


async def test_solo_coinbase_pays_each_finder(regtest, tmp_path: Path) -> None:
    cfg = pool_config(regtest, tmp_path / "pool", payout={"scheme": "solo", "fee_percent": 2.0})
    app = PoolApp(cfg)
    await app.start()
    miners = []
    try:
        addresses = [await arpc(regtest, "getnewaddress", wallet="pool") for _ in range(2)]
        miners = [await connect_miner(app.server.port, f"{a}.rig{i}") for i, a in enumerate(addresses)]
        pool_spk = (await arpc(regtest, "getaddressinfo", cfg.payout.pool_address, wallet="pool"))["scriptPubKey"]
        found = []
        for miner, address in zip(miners, addresses, strict=True):
            tip = await arpc(regtest, "getbestblockhash")
            reply, block_hash, _ = await mine_block_on(miner, tip)
            assert reply["result"] is True, reply
            await wait_tip(regtest, block_hash)
            found.append((block_hash, address))
            block = await arpc(regtest, "getblock", block_hash, 2)
            value = subsidy(block["height"]) + sum(sats(tx["fee"]) for tx in block["tx"][1:])
            fee = value * 200 // 10_000
            spk = (await arpc(regtest, "getaddressinfo", address, wallet="pool"))["scriptPubKey"]
            outs = {o["scriptPubKey"]["hex"]: sats(o["value"]) for o in block["tx"][0]["vout"]}
            assert outs[spk] == value - fee, outs
            assert outs[pool_spk] == fee, outs
        await asyncio.sleep(0.2)
        rows = await asyncio.to_thread(
            app.ledger.query, "SELECT block_hash, address, amount, kind, status FROM credits ORDER BY id"
        )
        by_block = {r[0]: r for r in rows}
        for block_hash, address in found:
            _, credited_to, amount, kind, status = by_block[block_hash]
            assert (credited_to, kind, status) == (address, "solo", "onchain")
            assert amount > 0
    finally:
        for miner in miners:
            await miner.close()
        await app.stop()
