"""A found block is never lost (issue 9, item 1), against real regtest bitcoinds.

Crash-safety cases: the disk is full when the block file is written (the block still reaches bitcoind);
bitcoind is down for longer than the old give-up time around a found block (credits survive, the block is
confirmed once bitcoind is back); a block marked rejected that is in the chain gets its credits back; and the
submitter hands every block to every configured node, whatever one unreachable node does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pool.app import PoolApp
from pool.ledger.book import REJECTED
from pool.node.blocks import BlockSubmitter, FoundBlock, RetryPolicy, SubmitOutcome
from pool.node.regtest import free_port
from pool.node.rpc import NodeClient, NodeUnavailable, RpcCredentials
from tests.conftest import pool_config, start_node
from tests.support.chain import arpc, connect_miner, mine_block_on, wait_tip, wait_until
from tests.support.payout_check import mine_share

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OUTAGE_SECONDS = 20.0  # with a 0.5 s retry cap: 40 attempts, more than the 30 the old code gave up after


def sample(app: PoolApp, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def block_row(app: PoolApp, block_hash: str) -> tuple[str, set[str]]:
    status = app.ledger.query("SELECT status FROM blocks WHERE block_hash=?", (block_hash,))
    credit_states = {r[0] for r in app.ledger.query("SELECT status FROM credits WHERE block_hash=?", (block_hash,))}
    return (status[0][0] if status else ""), credit_states


def audit_verify(ledger_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--ledger", str(ledger_path)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


async def test_full_disk_at_the_block_file_never_stops_submission(regtest, tmp_path: Path, monkeypatch):
    app = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / "pool"))
    await app.start()
    miner = None
    try:
        miner = await connect_miner(app.server.port, f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1")

        def disk_full(fd: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)  # SQLite syncs in C: only the block file write fails
        tip = await arpc(regtest, "getbestblockhash")
        reply, block_hash, _ = await mine_block_on(miner, tip)
        assert reply.get("result") is True, reply
        await wait_tip(regtest, block_hash, timeout=15)
        await wait_until(lambda: sample(app, "pool_blocks_total", stage="accepted") == 1, 15,
                         what="the block's outcome")
        monkeypatch.undo()
        assert sample(app, "pool_block_file_write_failures_total") == 1
        assert not [p.name for p in (tmp_path / "pool" / "blocks").iterdir() if block_hash in p.name]
        await wait_until(lambda: block_row(app, block_hash) == ("pending", {"pending"}), 10,
                         what="block and credits pending in the ledger")
        audit_verify(app.ledger.path)
    finally:
        monkeypatch.undo()
        if miner is not None:
            await miner.close()
        await app.stop()


async def test_bitcoind_down_long_around_a_found_block(fresh_regtest, tmp_path: Path):
    node = fresh_regtest
    config = await asyncio.to_thread(pool_config, node, tmp_path / "pool", payout={"maturity_check_interval": 0.5})
    config = dataclasses.replace(config, node=dataclasses.replace(config.node, submit_retry_max_delay=0.5))
    app = PoolApp(config)
    await app.start()
    miner = None
    try:
        miner = await connect_miner(app.server.port, f"{await arpc(node, 'getnewaddress', wallet='pool')}.w1")
        tip = await arpc(node, "getbestblockhash")
        sink = await arpc(node, "getnewaddress", wallet="pool")  # the wallet is not reloaded after a restart
        await asyncio.to_thread(node.stop)

        reply, block_hash, _ = await mine_block_on(miner, tip)
        assert reply.get("result") is True, reply  # valid work: credited, the block kept and retried
        await wait_until(lambda: block_row(app, block_hash)[0] == "pending", 10, what="block in the ledger")
        outage_end = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_end:
            await asyncio.sleep(1)
            assert block_hash in app.submitter.unresolved()
            assert block_row(app, block_hash) == ("pending", {"pending"}), "credits must survive the outage"
        assert sample(app, "pool_block_oldest_unresolved_seconds") > OUTAGE_SECONDS - 2
        assert sample(app, "pool_blocks_unresolved") == 1

        await asyncio.to_thread(node.start)
        await wait_tip(node, block_hash, timeout=30)
        await wait_until(lambda: sample(app, "pool_blocks_total", stage="accepted") == 1, 15,
                         what="the block's outcome")
        assert sample(app, "pool_blocks_total", stage="rejected") == 0
        assert sample(app, "pool_blocks_unresolved") == 0
        assert sample(app, "pool_block_oldest_unresolved_seconds") == 0

        await arpc(node, "generatetoaddress", 101, sink)
        await wait_until(lambda: block_row(app, block_hash) == ("confirmed", {"payable"}), 30,
                         what="block matured, credits payable")
        blocks_dir = tmp_path / "pool" / "blocks"
        assert [p.name.split(".")[1] for p in blocks_dir.glob(f"*{block_hash}*")] == ["confirmed"]
        audit_verify(app.ledger.path)
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()


async def test_rejected_block_in_the_chain_gets_its_credits_back(regtest, tmp_path: Path):
    app = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / "pool",
                                          difficulty={"start": 1e-11, "min": 1e-12, "max": 1e6}))
    await app.start()
    miner = None
    try:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        miner = await connect_miner(app.server.port, f"{address}.w1", "d=1e-11")
        await mine_share(miner, regtest)
        block_hash = await mine_share(miner, regtest, block=True)
        await wait_until(lambda: sample(app, "pool_blocks_total", stage="accepted") == 1, 15, what="outcome")
        # As an older pool left it after giving up on bitcoind: rejected, credits void.
        assert await app.ledger.set_block_status(block_hash, REJECTED) is True
        assert block_row(app, block_hash) == ("rejected", {"void"})
        changes = await app.maturity.check_once()
        assert (block_hash, "pending") in changes
        assert block_row(app, block_hash) == ("pending", {"pending"})
        audit_verify(app.ledger.path)
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()


async def start_unpeered_node(path: Path, bitcoind_dir: Path) -> object:
    """A node of its own; one more try when a port picked free was taken meanwhile (other test processes)."""
    for attempt in (1, 2):
        try:
            return await asyncio.to_thread(start_node, path / str(attempt), bitcoind_dir)
        except NodeUnavailable as exc:
            if attempt == 2 or "Unable to bind" not in str(exc):
                raise
    raise AssertionError("unreachable")


async def test_every_configured_node_receives_the_block(tmp_path: Path, bitcoind_dir: Path):
    node_a = await start_unpeered_node(tmp_path / "a", bitcoind_dir)
    node_b = None
    clients: list[NodeClient] = []
    try:
        node_b = await start_unpeered_node(tmp_path / "b", bitcoind_dir)  # not peered with node_a
        address = await arpc(node_a, "getnewaddress", wallet="pool")
        block = await arpc(node_a, "generateblock", address, [], False)  # built, not submitted
        dead = RpcCredentials(f"http://127.0.0.1:{free_port()}", "pool", "x")
        clients = [NodeClient(c, 5.0, workers=1, name="rpc-submit")
                   for c in (node_a.credentials, dead, node_b.credentials)]
        outcomes: list[SubmitOutcome] = []
        submitter = BlockSubmitter(clients, tmp_path / "blocks", outcomes.append,
                                   retry=RetryPolicy(0.05, 0.2))
        found = FoundBlock(1, block["hash"], block["hex"], "w1", 50 * 100_000_000, time.time())
        outcome = await asyncio.wait_for(submitter.submit_soon(found), 20)
        assert outcome.accepted and outcome.confirmed and outcome.attempts == 1, outcome
        assert outcome.sent_seconds is not None and outcome.sent_seconds <= outcome.resolved_seconds
        await wait_tip(node_a, block["hash"], timeout=10)
        await wait_tip(node_b, block["hash"], timeout=10)
        assert submitter.unresolved() == set()
        assert any(not t.done() for t in submitter._extras), "the unreachable node is still being tried"
        await submitter.drain(timeout=0.5)
        assert [p.name for p in (tmp_path / "blocks").iterdir()] == [f"00000001-{block['hash']}.confirmed.hex"]
        assert outcomes == [outcome]
    finally:
        for c in clients:
            c.close()
        if node_b is not None:
            await asyncio.to_thread(node_b.stop)
        await asyncio.to_thread(node_a.stop)
