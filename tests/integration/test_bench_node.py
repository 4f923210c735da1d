"""The benchmarks' mainnet-like node speaks what the pool expects: its figures are only worth something if the
pool takes its template (witness commitment checked by the pool's own code) and follows its tip switches
through ZMQ and through the long poll, as it would with bitcoind."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.mining.jobs import BlockTemplate, PreparedTemplate, parse_template
from pool.node.rpc import NodeClient, RpcCredentials
from pool.node.work import TemplateSource

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from mainnet_node import SUBSIDY, MainnetNode, load_block  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def node() -> Iterator[MainnetNode]:
    n = MainnetNode()
    n.start()
    try:
        yield n
    finally:
        n.stop()


def client_for(node: MainnetNode) -> NodeClient:
    return NodeClient(RpcCredentials(node.info["rpc_url"], node.info["user"], node.info["password"]), timeout=30)


async def test_template_is_block_413567_and_the_pool_accepts_it(node: MainnetNode) -> None:
    client = client_for(node)
    try:
        info = await client.call("getblockchaininfo")
        assert info["chain"] == "main"
        template = parse_template(await client.get_template())
    finally:
        client.close()
    block = load_block()
    assert template.height == 413567
    assert template.prevhash == block.prevhash
    assert template.bits == block.bits == 0x18058436
    assert [tx.txid for tx in template.transactions] == [tx.txid for tx in block.txs]
    assert len(template.transactions) == 1556
    # The fees add up to what the block's coinbase really claimed above the subsidy.
    assert template.coinbase_value == block.coinbase.output_value
    assert template.coinbase_value - template.total_fees == SUBSIDY
    prepared = PreparedTemplate.from_template(template)  # raises on a witness commitment mismatch
    assert prepared.commitment_script == template.default_witness_commitment
    assert len(prepared.branch) == 11


async def test_wrong_credentials_are_refused(node: MainnetNode) -> None:
    from pool.node.rpc import NodeError

    client = NodeClient(RpcCredentials(node.info["rpc_url"], node.info["user"], "wrong"), timeout=10)
    try:
        with pytest.raises(NodeError):
            await client.call("getblockchaininfo")
    finally:
        client.close()


@pytest.mark.parametrize("via", ["zmq", "longpoll"])
async def test_tip_switch_reaches_the_pool(node: MainnetNode, via: str) -> None:
    client = client_for(node)
    seen: list[tuple[BlockTemplate, bool, str]] = []
    got = asyncio.Event()

    def on_template(template: BlockTemplate, new_tip: bool, reason: str) -> None:
        seen.append((template, new_tip, reason))
        got.set()

    source = TemplateSource(client, on_template, refresh_interval=110, longpoll=via == "longpoll",
                            zmq_endpoint=node.info["zmq"] if via == "zmq" else "")
    tasks = [asyncio.create_task(loop_fn(), name=name) for name, loop_fn in source.loops().items()]
    try:
        await asyncio.wait_for(got.wait(), 10)
        first = seen[-1][0]
        await asyncio.sleep(0.5)  # the ZMQ subscription / the parked long poll is in place
        got.clear()
        tip = await asyncio.get_running_loop().run_in_executor(None, node.new_tip)
        await asyncio.wait_for(got.wait(), 10)
        template, new_tip, reason = seen[-1]
        assert new_tip and reason == via
        assert template.prevhash_hex == tip["hash"]
        assert template.height == first.height + 1
        assert len(template.transactions) == 1556
        header = await client.call("getblockheader", tip["hash"])
        assert header["height"] == first.height
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task
        client.close()
