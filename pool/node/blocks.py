"""Found blocks: on disk first, submitted at once, retried, and confirmed against the node's chain.

A found block must never be lost. The serialized block is written and fsynced before ``submitblock``; its file
stays ``pending`` until bitcoind has it in its block index, so a crash at any point is repaired at the next
start by ``resubmit_pending``. bitcoind's "duplicate" means it already has the block: that counts as accepted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.blocks")

ACCEPTED_RESULTS = (None, "duplicate", "duplicate-inconclusive", "inconclusive")


@dataclass(frozen=True, slots=True)
class FoundBlock:
    """What the share path knows about a solved block."""

    height: int
    block_hash: str  # display hex
    block_hex: str
    worker: str
    reward: int
    found_at: float


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    block: FoundBlock
    accepted: bool
    confirmed: bool
    result: str
    attempts: int


OutcomeCallback = Callable[[SubmitOutcome], None]


class BlockSubmitter:
    """Owns the life of a found block from share to confirmation."""

    def __init__(
        self,
        client: NodeClient,
        blocks_dir: Path,
        on_outcome: OutcomeCallback | None = None,
        max_attempts: int = 30,
    ) -> None:
        self._client = client
        self._dir = Path(blocks_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._on_outcome = on_outcome
        self._max_attempts = max_attempts
        self._tasks: set[asyncio.Task[SubmitOutcome]] = set()

    def submit_soon(self, block: FoundBlock) -> asyncio.Task[SubmitOutcome]:
        """Start submitting in the background; the share reply does not wait for bitcoind."""
        task = asyncio.create_task(self.submit(block), name=f"submit-{block.block_hash[:16]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _path(self, block: FoundBlock, state: str) -> Path:
        return self._dir / f"{block.height:08d}-{block.block_hash}.{state}.hex"

    def _write_pending(self, block: FoundBlock) -> Path:
        path = self._path(block, "pending")
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(f"{block.worker}\n{block.reward}\n{block.block_hex}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    async def submit(self, block: FoundBlock) -> SubmitOutcome:
        loop = asyncio.get_running_loop()
        pending = await loop.run_in_executor(None, self._write_pending, block)
        attempts = 0
        delay = 0.2
        result = "unsent"
        accepted = False
        while attempts < self._max_attempts:
            attempts += 1
            try:
                reply = await self._client.call("submitblock", block.block_hex)
                result = "accepted" if reply is None else str(reply)
                accepted = reply in ACCEPTED_RESULTS
                break
            except NodeUnavailable as exc:
                log.warning("submitblock_retry", block_hash=block.block_hash, attempt=attempts, error=str(exc))
            except NodeError as exc:
                log.warning("submitblock_error", block_hash=block.block_hash, attempt=attempts, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        confirmed = await self._confirm(block) if accepted or result == "unsent" else False
        accepted = accepted or confirmed
        outcome = SubmitOutcome(block, accepted, confirmed, result, attempts)
        if confirmed:
            os.replace(pending, self._path(block, "confirmed"))
            log.info("block_confirmed", height=block.height, block_hash=block.block_hash, worker=block.worker)
        elif not accepted and result != "unsent":
            os.replace(pending, self._path(block, "rejected"))
            log.error("block_rejected", height=block.height, block_hash=block.block_hash, result=result)
        else:
            log.error("block_unconfirmed", height=block.height, block_hash=block.block_hash, result=result)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    async def _confirm(self, block: FoundBlock, attempts: int = 10) -> bool:
        """Ask bitcoind for the block by hash: it must be in its index (and normally the active chain)."""
        for i in range(attempts):
            try:
                header = await self._client.call("getblockheader", block.block_hash)
                return isinstance(header, dict) and header.get("hash") == block.block_hash
            except NodeError:
                return False
            except NodeUnavailable:
                await asyncio.sleep(min(0.2 * 2**i, 5.0))
        return False

    async def resubmit_pending(self) -> list[SubmitOutcome]:
        """Blocks left pending by a crash are submitted again at start-up."""
        outcomes = []
        for path in sorted(self._dir.glob("*.pending.hex")):
            height_text, _, rest = path.name.partition("-")
            block_hash = rest.split(".", 1)[0]
            worker, reward, block_hex = path.read_text().split("\n")[:3]
            block = FoundBlock(int(height_text), block_hash, block_hex, worker, int(reward), time.time())
            log.warning("resubmitting_pending_block", height=block.height, block_hash=block_hash)
            outcomes.append(await self.submit(block))
        return outcomes

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for in-flight submissions at shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
