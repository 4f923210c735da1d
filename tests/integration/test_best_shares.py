"""Best share difficulty on a live pool (regtest): per worker and per address in /api/address, the pool's
round and all-time best in /api/pool and in ``pool_best_share_difficulty``, kept across pool restarts, and a
new round after a found block.

On regtest the network difficulty (~4.7e-10) is below the tests' usual share difficulty, so every share would
be a block; here the miners ask for d=1e-10 and the test picks hashes above the network target, so it knows
each share's difficulty and which shares are blocks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import running_pool
from tests.support.chain import (
    DIFF1,
    arpc,
    bits_target,
    connect_miner,
    latest_job_on,
    mine_block_on,
    solve_where,
    wait_job_on,
    wait_until,
)
from tests.support.miner import TestMiner as Miner

pytestmark = pytest.mark.integration


async def api(app: Any, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.get(f"http://127.0.0.1:{app.http.port}{path}") as resp:
            return json.loads(await resp.text())


async def plain_share(miner: Miner, tip: str) -> float:
    """Submit an accepted share that is not a block; returns its difficulty (of its hash)."""
    job = await wait_job_on(miner, tip)
    job = latest_job_on(miner, tip) or job
    network = bits_target(job.nbits)
    en2, ntime, nonce, h = solve_where(miner, job, lambda v: v > network)
    reply = await miner.submit(job, en2, ntime, nonce)
    assert reply.get("result") is True, reply
    return DIFF1 / int.from_bytes(h, "little")


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


async def test_best_shares_survive_restarts_and_rounds(regtest, tmp_path: Path):
    data = tmp_path / "pool"
    address = await arpc(regtest, "getnewaddress", wallet="pool")
    tip = await arpc(regtest, "getbestblockhash")
    mined: dict[str, list[float]] = {"w1": [], "w2": []}
    async with running_pool(regtest, data) as app:
        miners = {w: await connect_miner(app.server.port, f"{address}.{w}", "d=1e-10") for w in mined}
        try:
            for _ in range(6):
                for w, miner in miners.items():
                    mined[w].append(await plain_share(miner, tip))
        finally:
            for miner in miners.values():
                await miner.close()
        top = max(max(v) for v in mined.values())
        top_worker = next(w for w, v in mined.items() if max(v) == top)
        pool = (await api(app, "/api/pool"))["best_share"]
        assert pool["round_number"] == 0
        assert close(pool["all_time"]["difficulty"], top) and pool["all_time"]["worker"] == top_worker
        assert close(pool["round"]["difficulty"], top) and pool["all_time"]["address"] == address
        body = await api(app, f"/api/address/{address}")
        by_worker = {b["worker"]: b for b in body["best_shares"]}
        for w, values in mined.items():
            assert close(by_worker[w]["best"], max(values)) and close(by_worker[w]["round_best"], max(values))
        assert close(body["best_share"]["all_time"], top)
        app.refresh_gauges()
        sample = app.metrics.registry.get_sample_value
        assert close(sample("pool_best_share_difficulty", {"scope": "all_time"}), top)
        assert close(sample("pool_best_share_difficulty", {"scope": "round"}), top)

    # A restart keeps every record; then a block starts a new round.
    async with running_pool(regtest, data) as app:
        pool = (await api(app, "/api/pool"))["best_share"]
        assert close(pool["all_time"]["difficulty"], top) and close(pool["round"]["difficulty"], top)
        body = await api(app, f"/api/address/{address}")
        assert {b["worker"]: round(b["best"] / max(mined[b["worker"]]), 9) for b in body["best_shares"]} == {
            "w1": 1.0, "w2": 1.0}
        w1 = await connect_miner(app.server.port, f"{address}.w1", "d=1e-10")
        w2 = await connect_miner(app.server.port, f"{address}.w2", "d=1e-10")
        try:
            reply, block_hash, _ = await mine_block_on(w1, tip)
            assert reply.get("result") is True, reply
            await wait_until(lambda: app.coordinator.blocks_found == 1, 10, what="the block counted")
            pool = (await api(app, "/api/pool"))["best_share"]
            assert pool["round_number"] == 1 and pool["round"] is None
            block_difficulty = pool["all_time"]["difficulty"]
            assert block_difficulty > top and pool["all_time"]["worker"] == "w1"  # a block beats any plain share
            after = await plain_share(w2, block_hash)
        finally:
            await w1.close()
            await w2.close()
        pool = (await api(app, "/api/pool"))["best_share"]
        assert close(pool["round"]["difficulty"], after) and pool["round"]["worker"] == "w2"

    async with running_pool(regtest, data) as app:
        pool = (await api(app, "/api/pool"))["best_share"]
        assert pool["round_number"] == 1
        assert close(pool["all_time"]["difficulty"], block_difficulty)
        assert close(pool["round"]["difficulty"], after)
        by_worker = {b["worker"]: b for b in (await api(app, f"/api/address/{address}"))["best_shares"]}
        assert close(by_worker["w1"]["best"], block_difficulty) and by_worker["w1"]["round_best"] == 0.0
        assert close(by_worker["w2"]["round_best"], after) and close(by_worker["w2"]["best"], max(mined["w2"] + [after]))
