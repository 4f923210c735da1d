"""The block submitter's retry loop against a node whose answers go wrong in unexpected ways.

A stand-in node (pure logic, no network): the real-bitcoind paths are in tests/integration/test_block_safety.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pool.node.blocks import BlockSubmitter, FoundBlock, RetryPolicy

BLOCK_HASH = "ab" * 32


class OddNode:
    """``submitblock`` first fails with an error no handler expects, then accepts the block."""

    url = "http://odd.invalid"

    def __init__(self) -> None:
        self.submits = 0

    def start_call(self, method: str, *params: Any, on_sent: Any = None) -> asyncio.Future[Any]:
        assert method == "submitblock"
        self.submits += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.submits == 1:
            future.set_exception(AttributeError("'list' object has no attribute 'get'"))
        else:
            future.set_result(None)
        return future

    async def call(self, method: str, *params: Any) -> Any:
        assert method == "getblockheader"
        return {"hash": params[0]}


async def test_an_unexpected_error_is_retried_not_fatal(tmp_path: Path) -> None:
    """Before, any exception but NodeError/NodeUnavailable killed the submission task: the block stayed
    "unresolved" for ever and was never sent again."""
    node = OddNode()
    outcomes: list[Any] = []
    submitter = BlockSubmitter([node], tmp_path / "blocks", outcomes.append,  # type: ignore[list-item]
                               retry=RetryPolicy(0.01, 0.05))
    found = FoundBlock(1, BLOCK_HASH, "00" * 80, "w1", 50 * 100_000_000, time.time())
    outcome = await asyncio.wait_for(submitter.submit_soon(found), 10)
    assert node.submits == 2
    assert outcome.accepted and outcome.confirmed
    assert submitter.unresolved() == set()
    assert outcomes == [outcome]
    await submitter.drain(timeout=1)


class GoneAfterAnswering:
    """Accepts the block at once, then dies: every later call finds it unreachable."""

    url = "http://gone.invalid"

    def start_call(self, method: str, *params: Any, on_sent: Any = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def call(self, method: str, *params: Any) -> Any:
        from pool.node.rpc import NodeUnavailable

        raise NodeUnavailable("connection refused")


class SlowToHaveIt:
    """Gets the block a little later (its submission was still on the way): unknown until then."""

    url = "http://slow.invalid"

    def __init__(self) -> None:
        self.has_it = asyncio.Event()

    def start_call(self, method: str, *params: Any, on_sent: Any = None) -> asyncio.Future[Any]:
        async def answer() -> None:
            await asyncio.sleep(0.3)
            self.has_it.set()

        return asyncio.ensure_future(answer())

    async def call(self, method: str, *params: Any) -> Any:
        from pool.node.rpc import NodeError

        if not self.has_it.is_set():
            raise NodeError(-5, "Block not found")
        return {"hash": params[0]}


async def test_a_block_is_confirmed_by_another_node_when_the_accepting_one_dies(tmp_path: Path) -> None:
    """The node that accepted the block was killed right after answering: asking only it, the confirmation
    retried for ~30 s and gave up ("unconfirmed"), though the other node had the block within a second."""
    gone, slow = GoneAfterAnswering(), SlowToHaveIt()
    submitter = BlockSubmitter([gone, slow], tmp_path / "blocks", lambda _: None,  # type: ignore[list-item]
                               retry=RetryPolicy(0.01, 0.05))
    found = FoundBlock(1, BLOCK_HASH, "00" * 80, "w1", 50 * 100_000_000, time.time())
    outcome = await asyncio.wait_for(submitter.submit_soon(found), 20)  # asking only the dead node: ~31 s
    assert outcome.accepted and outcome.confirmed
    assert list((tmp_path / "blocks").glob("*.confirmed.hex"))
    await submitter.drain(timeout=1)
