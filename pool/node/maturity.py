"""Block lifecycle against the node's chain: pending → confirmed at maturity, orphaned on a reorg.

Polls bitcoind for every block the ledger has not finalised: ``confirmations == -1`` means the block is no
longer in the main chain (orphaned, its credits voided); a block that comes back is pending again, and one
with 100 + margin confirmations is confirmed (credits payable).
"""

from __future__ import annotations

import asyncio

import structlog

from pool.ledger.book import CONFIRMED, ORPHANED, PENDING
from pool.ledger.sqlite import Ledger
from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.maturity")
COINBASE_MATURITY = 100


def classify(confirmations: int, required: int) -> str:
    """Pure rule: the ledger state for a block with this many confirmations."""
    if confirmations < 0:
        return ORPHANED
    return CONFIRMED if confirmations >= required else PENDING


class MaturityTracker:
    def __init__(self, client: NodeClient, ledger: Ledger, margin: int, interval: float,
                 on_change: object = None) -> None:
        self._client = client
        self._ledger = ledger
        self.required = COINBASE_MATURITY + margin
        self._interval = interval
        self._on_change = on_change

    async def check_once(self) -> list[tuple[str, str]]:
        """One pass over unfinished blocks; returns the (hash, new status) changes made."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(
            None,
            self._ledger.query,
            "SELECT block_hash, status FROM blocks WHERE status IN ('pending', 'orphaned', 'confirmed')"
            " ORDER BY height DESC LIMIT 2000",
        )
        changes = []
        for block_hash, status in rows:
            try:
                header = await self._client.call("getblockheader", block_hash)
                confirmations = int(header.get("confirmations", -1))
            except NodeError as exc:
                if exc.code == -5:  # block not known at all: never made it into the node
                    confirmations = -1
                else:
                    raise
            new = classify(confirmations, self.required)
            if status == CONFIRMED and new == PENDING:
                new = CONFIRMED  # maturity is never taken back except by a reorg
            changed = await self._ledger.set_block_status(block_hash, new, confirmations)
            if changed:
                changes.append((block_hash, new))
                log.info("block_status", block_hash=block_hash, status=new, confirmations=confirmations)
        return changes

    async def run(self) -> None:
        while True:
            try:
                changes = await self.check_once()
                if changes and callable(self._on_change):
                    self._on_change(changes)
            except (NodeUnavailable, NodeError) as exc:
                log.warning("maturity_check_failed", error=str(exc))
            await asyncio.sleep(self._interval)
