"""On a ZMQ tip the pool sends coinbase-only work at once and the full template as an update (real bitcoind)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import pool_config
from tests.support.chain import (
    arpc,
    bits_target,
    connect_miner,
    display_hash,
    share_target,
    solve_where,
    stratum_prevhash_for,
    wait_tip,
    wait_until,
)

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _pool(node: Any, data_dir: Path, **node_settings: Any) -> AsyncIterator[Any]:
    """A pool with ``node_settings`` in its [node] section (``running_pool`` cannot take a ``node=`` override)."""
    from pool.app import PoolApp

    config = await asyncio.to_thread(pool_config, node, data_dir)
    app = PoolApp(dataclasses.replace(config, node=dataclasses.replace(config.node, **node_settings)))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def _fund_pool_wallet(node) -> str:  # noqa: ANN001
    address = await arpc(node, "getnewaddress", wallet="pool")
    if await arpc(node, "getbalance", wallet="pool") < 1:
        await arpc(node, "generatetoaddress", 101, address)
    return address


async def test_new_tip_brings_empty_work_first_and_a_block_mined_on_it_is_accepted(regtest, tmp_path: Path):
    spare = await _fund_pool_wallet(regtest)
    async with _pool(regtest, tmp_path / "pool", longpoll=False) as app:
        miner = await connect_miner(app.server.port, f"{spare}.w1")
        try:
            for _ in range(3):  # transactions that the next block leaves in the mempool
                await arpc(regtest, "sendtoaddress", spare, 0.5, wallet="pool")
            # generateblock with no transactions: the mempool survives, so the full template differs.
            tip = (await arpc(regtest, "generateblock", spare, []))["hash"]
            want = stratum_prevhash_for(tip)
            await wait_until(lambda: sum(j.prevhash == want for j in miner.jobs) >= 2, 10,
                             what="empty then full work on the new tip")
            empty, full = [j for j in miner.jobs if j.prevhash == want][:2]
            assert empty.clean and empty.branch == []  # coinbase only, miners restart on it at once
            assert not full.clean and len(full.branch) >= 2  # the full template: an update on the same tip
            assert app.metrics.templates.labels("empty")._value.get() >= 1

            # The empty job is still live after the update, and a block solved on it is a valid block.
            target = min(share_target(miner.job_difficulty.get(empty.job_id, miner.difficulty)),
                         bits_target(empty.nbits))
            en2, ntime, nonce, h = solve_where(miner, empty, lambda v: v <= target)
            reply = await miner.submit(empty, en2, ntime, nonce)
            assert reply.get("result") is True, reply
            block_hash = display_hash(h)
            await wait_tip(regtest, block_hash, timeout=15)
            block = await arpc(regtest, "getblock", block_hash)
            assert len(block["tx"]) == 1 and block["previousblockhash"] == tip
            assert len(await arpc(regtest, "getrawmempool")) >= 3  # the empty block left them for the next
        finally:
            await miner.close()


async def test_empty_block_first_can_be_turned_off(regtest, tmp_path: Path):
    spare = await _fund_pool_wallet(regtest)
    async with _pool(regtest, tmp_path / "pool", longpoll=False, empty_block_first=False) as app:
        miner = await connect_miner(app.server.port, f"{spare}.w1")
        try:
            await arpc(regtest, "sendtoaddress", spare, 0.5, wallet="pool")
            tip = (await arpc(regtest, "generateblock", spare, []))["hash"]
            want = stratum_prevhash_for(tip)
            await wait_until(lambda: any(j.prevhash == want for j in miner.jobs), 10, what="work on the new tip")
            await asyncio.sleep(0.3)
            first = next(j for j in miner.jobs if j.prevhash == want)
            assert first.clean and first.branch  # the full template straight away
            assert app.metrics.templates.labels("empty")._value.get() == 0
        finally:
            await miner.close()
