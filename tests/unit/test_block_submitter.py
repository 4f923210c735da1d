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
