"""Background work never dies silently, and a stale RPC connection is not "bitcoind down" (issue 8, items 4-5).

Against a real regtest bitcoind: a bitcoind that closes idle keep-alive connections after 1 s, a ZMQ endpoint
libzmq refuses, a ledger that reports "database is locked" to the maturity loop, and a ledger writer thread that
dies under a connected miner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from pool.app import PoolApp
from pool.node.blocks import SubmitOutcome
from tests.conftest import pool_config, start_node
from tests.support.chain import arpc, connect_miner, mine_block_on, wait_tip, wait_until
from tests.support.payout_check import submit_share_on

pytestmark = pytest.mark.integration

SHARE_DIFF = 1e-11  # below regtest's network difficulty: shares that are not blocks


def sample(app: PoolApp, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def readyz(app: PoolApp) -> tuple[int, dict]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.get(f"http://127.0.0.1:{app.http.port}/readyz") as resp:
            return resp.status, await resp.json()


@pytest.fixture
def impatient_node(tmp_path: Path, bitcoind_dir: Path):
    """A node that closes idle keep-alive RPC connections after one second (bitcoind's default is 30 s)."""
    node = start_node(tmp_path / "node", bitcoind_dir, ("-rpcservertimeout=1",))
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.one_process("patches or reads the one process's block submitter and metrics (front-ends submit blocks with N >= 2)")
async def test_stale_keepalive_connection_is_not_bitcoind_down(impatient_node, tmp_path: Path):
    node = impatient_node
    config = await asyncio.to_thread(pool_config, node, tmp_path / "pool")
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, refresh_interval=2.0))
    app = PoolApp(config)
    await app.start()
    flips: list[bool] = []
    outcomes: list[SubmitOutcome] = []
    miner = None
    try:
        report_health = app.source._on_health
        app.source._on_health = lambda up: (flips.append(up), report_health(up))
        report_outcome = app.submitter._on_outcome
        app.submitter._on_outcome = lambda o: (outcomes.append(o), report_outcome(o))
        miner = await connect_miner(app.server.port, f"{await arpc(node, 'getnewaddress', wallet='pool')}.w1")
        tip = await arpc(node, "getbestblockhash")
        reply, first, _ = await mine_block_on(miner, tip)
        assert reply.get("result") is True, reply
        await wait_tip(node, first)
        await wait_until(lambda: len(outcomes) == 1, 15, what="first block's outcome")

        # Several refreshes, each after more than the server's idle timeout: every one meets a closed
        # connection, none may fail or flip the health flag.
        refreshes_before = app.source.fetched_at
        await asyncio.sleep(7)
        assert app.source.fetched_at > refreshes_before
        assert sample(app, "pool_bitcoind_rpc_errors_total", method="getblocktemplate", kind="unavailable") == 0
        assert flips == [] and app.source.healthy
        assert sample(app, "pool_bitcoind_rpc_stale_retries_total", method="getblocktemplate") >= 2, \
            "bitcoind never closed an idle connection: the test proves nothing"
        assert app.readiness_problems() == []

        # The submit connection has idled too: the next block still goes out on the first try.
        reply, second, _ = await mine_block_on(miner, first)
        assert reply.get("result") is True, reply
        await wait_tip(node, second)
        await wait_until(lambda: len(outcomes) == 2, 15, what="second block's outcome")
        assert outcomes[1].accepted and outcomes[1].attempts == 1, outcomes[1]
        assert sample(app, "pool_bitcoind_rpc_errors_total", method="submitblock", kind="unavailable") == 0
        assert sample(app, "pool_bitcoind_rpc_stale_retries_total", method="submitblock") >= 1
        assert flips == []
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()


async def test_refused_zmq_endpoint_does_not_stop_template_updates(regtest, tmp_path: Path):
    """libzmq refuses the endpoint at run time: the ZMQ loop fails alone, loudly; the other loops go on."""
    config = await asyncio.to_thread(pool_config, regtest, tmp_path / "pool")
    # Past config validation (which now refuses it): the run-time failure must still be contained.
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, zmq_hashblock="tcp://127.0.0.1"))
    app = PoolApp(config)
    app.supervisor.initial_backoff = 5.0
    await app.start()
    try:
        await wait_until(lambda: sample(app, "pool_task_failures_total", task="template-zmq") >= 1, 10,
                         what="ZMQ loop failure counted")
        status, body = await readyz(app)
        assert status == 503 and any("template-zmq" in p for p in body["problems"]), body
        height = app.source.template.height
        sink = await arpc(regtest, "getnewaddress", wallet="pool")
        await arpc(regtest, "generatetoaddress", 1, sink)
        # The long poll (or the refresh) still brings the new tip.
        await wait_until(lambda: app.source.template.height == height + 1, 20, what="template on the new tip")
        assert all(not s.task.done() for s in app.supervisor.tasks.values())
    finally:
        await app.stop()


LOOPS = {
    # task: (payout settings that make it run often, SQL only that loop reads)
    "maturity": ({"maturity_check_interval": 0.1}, "FROM blocks WHERE status"),
    "payments": ({"payments_enabled": True, "payment_interval": 0.1, "wallet": "pool"},
                 "FROM payments WHERE status='sending' GROUP BY batch"),
}


@pytest.mark.parametrize("task", sorted(LOOPS))
async def test_loop_survives_database_locked(regtest, tmp_path: Path, task: str):
    """One "database is locked" used to end the maturity or payment loop for good, silently."""
    payout, marker = LOOPS[task]
    app = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / "pool", payout=payout))
    app.supervisor.initial_backoff = 1.0
    await app.start()
    try:
        real_query = app.ledger.query
        calls = {"locked": 0, "ok": 0}

        def flaky_query(sql: str, params: tuple = ()) -> list:
            if marker in sql:
                if calls["locked"] < 2:
                    calls["locked"] += 1
                    raise sqlite3.OperationalError("database is locked")
                calls["ok"] += 1
            return real_query(sql, params)

        app.ledger.query = flaky_query  # type: ignore[method-assign]
        await wait_until(lambda: calls["locked"] >= 1, 10, what=f"{task} loop hitting the lock")
        status, body = await readyz(app)
        assert status == 503 and any(task in p and "database is locked" in p for p in body["problems"]), body
        await wait_until(lambda: calls["ok"] >= 3, 20, what=f"{task} loop running again")
        assert sample(app, "pool_task_failures_total", task=task) == 2
        await wait_until(lambda: not app.supervisor.down(), 10, what=f"{task} task up again")
        status, body = await readyz(app)
        assert status == 200, body
    finally:
        await app.stop()


async def test_dead_ledger_writer_answers_error_and_marks_pool_not_ready(regtest, tmp_path: Path):
    app = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / "pool",
                                          difficulty={"start": SHARE_DIFF, "min": 1e-12, "max": 1e6}))
    await app.start()
    miner = None
    try:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        miner = await connect_miner(app.server.port, f"{address}.w1", f"d={SHARE_DIFF}")
        tip = await arpc(regtest, "getbestblockhash")
        reply, _, _ = await submit_share_on(miner, tip, block=False)
        assert reply.get("result") is True, reply

        def dying_commit(conn, batch):
            raise RuntimeError("injected: writer thread failure")

        app.ledger._commit = dying_commit  # type: ignore[method-assign]
        for _ in range(2):  # the share in hand when the writer dies, and every later one
            reply, _, _ = await asyncio.wait_for(submit_share_on(miner, tip, block=False), 15)
            assert reply.get("result") is not True and reply["error"][0] == 20, reply
        assert sample(app, "pool_task_failures_total", task="ledger-writer") == 1
        status, body = await readyz(app)
        assert status == 503 and any("ledger writer" in p for p in body["problems"]), body
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()
