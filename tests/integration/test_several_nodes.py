"""Several bitcoinds: the active one killed while a miner mines, mining goes on on the other without dropping
the miner or losing a block; a node whose tip is behind is not used."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pool.node.regtest import RegtestNode
from tests.conftest import running_pool, start_node
from tests.support.chain import arpc, connect_miner, mine_block_on, wait_job_on, wait_tip, wait_until

pytestmark = pytest.mark.integration


def entry(node: RegtestNode, name: str, **pool_wide: Any) -> dict[str, Any]:
    return {"name": name, "rpc_url": node.rpc_url, "rpc_user": node.user, "rpc_password": node.password,
            "zmq_hashblock": node.zmq_endpoint, **pool_wide}


async def connect(a: RegtestNode, b: RegtestNode) -> None:
    """P2P between the two nodes on loopback; returns once both see the connection."""
    await arpc(b, "addnode", f"127.0.0.1:{a.p2p_port}", "add")

    async def linked() -> bool:
        return await arpc(a, "getconnectioncount") >= 1 and await arpc(b, "getconnectioncount") >= 1

    await wait_until(linked, 30, interval=0.2, what="the two nodes connected")


def sample(app: Any, name: str, **labels: str) -> float:
    value = app.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def on_chain(node: RegtestNode, block_hash: str) -> bool:
    header = await arpc(node, "getblockheader", block_hash)
    return int(header["confirmations"]) >= 1  # -1: known but not in the active chain


@pytest.fixture
def two_nodes(tmp_path: Path, bitcoind_dir: Path):
    nodes = [start_node(tmp_path / name, bitcoind_dir) for name in ("a", "b")]
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


async def test_active_node_killed_while_mining_fails_over_without_losing_a_block(two_nodes, tmp_path: Path):
    a, b = two_nodes
    await connect(a, b)
    refresh = 10.0
    nodes = [entry(a, "a", network="regtest", refresh_interval=refresh), entry(b, "b")]
    async with running_pool(a, tmp_path / "pool", node=nodes) as app:
        assert app.client.active_name == "a"
        miner = await connect_miner(app.server.port, f"{await arpc(a, 'getnewaddress', wallet='pool')}.w1")
        try:
            reply, first, _ = await mine_block_on(miner, await arpc(a, "getbestblockhash"))
            assert reply.get("result") is True, reply
            await wait_tip(a, first)
            await wait_tip(b, first)

            # A block is found and the active node is killed (SIGKILL) at once: it may never have had it.
            reply, second, _ = await mine_block_on(miner, first)
            a.process.kill()
            killed_at = time.monotonic()
            a.process.wait(10)
            assert reply.get("result") is True, reply

            await wait_until(lambda: app.client.active_name == "b", refresh, what="the switch to node b")
            switched_after = time.monotonic() - killed_at
            assert switched_after < refresh
            await wait_tip(b, second, timeout=refresh)  # the pool sent it to b as well

            # Mining goes on, on b, on the same connection.
            tip = second
            for _ in range(2):
                await wait_job_on(miner, tip, timeout=refresh)
                reply, tip, _ = await mine_block_on(miner, tip, timeout=refresh)
                assert reply.get("result") is True, reply
                await wait_tip(b, tip, timeout=refresh)

            assert len(app.server.sessions) == 1 and not miner.reader.at_eof()
            assert sample(app, "pool_connects_total") == 1
            assert app.client.switches == 1 and sample(app, "pool_node_switches_total") == 1
            assert sample(app, "pool_node_active", node="b") == 1 and sample(app, "pool_node_active", node="a") == 0
            assert sample(app, "pool_node_up", node="a") == 0
            await wait_until(lambda: sample(app, "pool_node_tip_height", node="b") == 4, 10,
                             what="node b's tip height in metrics")

            # No found block lost: every block the pool recorded is on the surviving node's chain.
            found = [row[0] for row in app.ledger.query("SELECT block_hash FROM blocks ORDER BY height")]
            assert found == [first, second, *found[2:]] and len(found) == 4
            for block_hash in found:
                assert await on_chain(b, block_hash), block_hash
            blocks_dir = tmp_path / "pool" / "blocks"
            await wait_until(lambda: len(list(blocks_dir.glob("*.confirmed.hex"))) == 4, 15,
                             what="every block confirmed by a node")
        finally:
            await miner.close()


async def test_a_node_whose_tip_is_behind_is_not_chosen(two_nodes, tmp_path: Path):
    a, b = two_nodes  # not connected yet: b mines two blocks a does not have
    await arpc(b, "generatetoaddress", 2, await arpc(b, "getnewaddress", wallet="pool"))
    b_tip = await arpc(b, "getbestblockhash")
    nodes = [entry(a, "a", network="regtest", refresh_interval=2), entry(b, "b")]
    async with running_pool(a, tmp_path / "pool", node=nodes) as app:
        assert app.client.active_name == "b"  # a is preferred, but behind
        miner = await connect_miner(app.server.port, f"{await arpc(a, 'getnewaddress', wallet='pool')}.w1")
        try:
            reply, found, _ = await mine_block_on(miner, b_tip)
            assert reply.get("result") is True, reply
            await wait_tip(b, found)
            assert app.client.active_name == "b"

            # Once a has caught up, it is the first healthy node again: templates come from it.
            await connect(a, b)
            await wait_tip(a, found, timeout=30)
            await wait_until(lambda: app.client.active_name == "a", 15, what="back to the preferred node")
            reply, next_block, _ = await mine_block_on(miner, found)
            assert reply.get("result") is True, reply
            await wait_tip(a, next_block)
            await wait_tip(b, next_block)
            assert len(app.server.sessions) == 1
        finally:
            await miner.close()


async def test_a_hung_active_node_is_left_within_one_refresh_interval(two_nodes, tmp_path: Path):
    """SIGSTOP: the node keeps its sockets open and answers nothing (a hung bitcoind). The health probe times
    out, the pool switches, and a fetch parked on the hung node does not wait for its RPC timeout."""
    a, b = two_nodes
    await connect(a, b)
    refresh = 15.0
    nodes = [entry(a, "a", network="regtest", refresh_interval=refresh), entry(b, "b")]
    async with running_pool(a, tmp_path / "pool", node=nodes) as app:
        miner = await connect_miner(app.server.port, f"{await arpc(a, 'getnewaddress', wallet='pool')}.w1")
        try:
            reply, first, _ = await mine_block_on(miner, await arpc(a, "getbestblockhash"))
            assert reply.get("result") is True, reply
            await wait_tip(b, first)
            a.process.send_signal(signal.SIGSTOP)
            try:
                stopped_at = time.monotonic()
                await wait_until(lambda: app.client.active_name == "b", refresh, what="the switch to node b")
                assert time.monotonic() - stopped_at < refresh
                reply, second, _ = await mine_block_on(miner, first, timeout=refresh)
                assert reply.get("result") is True, reply
                await wait_tip(b, second, timeout=refresh)
                await wait_job_on(miner, second, timeout=refresh)  # new work, from b
                assert len(app.server.sessions) == 1 and not miner.reader.at_eof()
            finally:
                a.process.send_signal(signal.SIGCONT)
        finally:
            await miner.close()
