"""The ledger's side of bitcoind: block maturity and orphaning, and automatic wallet payments.

Maturity: polls bitcoind for every block the ledger has not finalised. ``confirmations == -1`` means the block
is no longer in the main chain (orphaned, its credits voided); a block that comes back is pending again, and
one with 100 + margin confirmations is confirmed (credits payable).

Payments, never twice. One round: (1) in one ledger transaction, every due balance becomes a ``sending``
payment row tagged with a batch id; (2) ``sendmany`` with the batch id as the transaction comment; (3) the rows
become ``sent`` with the txid. A crash between (2) and (3) leaves ``sending`` rows: reconciliation looks the
batch id up among the wallet's transactions and marks them sent (found) or failed (not found after the grace
period, so the balance becomes payable again). Balances already count ``sending`` rows, so no round can pay
them again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from pool.ledger import book
from pool.ledger.book import CONFIRMED, ORPHANED, PENDING, REJECTED
from pool.ledger.sqlite import Ledger
from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.payouts")
COINBASE_MATURITY = 100


def classify(confirmations: int, required: int) -> str:
    """Pure rule: the ledger state for a block with this many confirmations."""
    if confirmations < 0:
        return ORPHANED
    return CONFIRMED if confirmations >= required else PENDING


class MaturityTracker:
    """Decides every block's ledger status from the chain.

    Besides maturing and orphaning, it re-checks blocks marked ``rejected`` (bitcoind said no, or the pool
    gave up on an answer in an older version): a rejected block that is in the best chain after all is moved
    back to pending/confirmed and its credits are restored. Blocks the submitter is still sending are left
    alone until bitcoind has answered about them.
    """

    def __init__(self, client: NodeClient, ledger: Ledger, margin: int, interval: float,
                 on_change: object = None, in_flight: Callable[[], set[str]] | None = None) -> None:
        self._client = client
        self._ledger = ledger
        self.required = COINBASE_MATURITY + margin
        self._interval = interval
        self._on_change = on_change
        self._in_flight = in_flight

    async def check_once(self) -> list[tuple[str, str]]:
        """One pass over unfinished blocks; returns the (hash, new status) changes made."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(
            None,
            self._ledger.query,
            "SELECT block_hash, status FROM blocks WHERE status IN ('pending', 'orphaned', 'confirmed', 'rejected')"
            " ORDER BY height DESC LIMIT 2000",
        )
        skip = self._in_flight() if self._in_flight is not None else set()
        changes = []
        for block_hash, status in rows:
            if block_hash in skip:
                continue
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
            if status == REJECTED and new == ORPHANED:
                new = REJECTED  # still not in the chain: it stays rejected (and is looked at again)
            changed = await self._ledger.set_block_status(block_hash, new, confirmations)
            if changed:
                changes.append((block_hash, new))
                if status == REJECTED:
                    log.warning("rejected_block_in_chain", block_hash=block_hash, status=new,
                                confirmations=confirmations, note="credits restored")
                else:
                    log.info("block_status", block_hash=block_hash, status=new, confirmations=confirmations)
        return changes

    async def run(self) -> None:
        """Check forever; node trouble is a warning, anything else ends the run for the supervisor to log,
        count and restart (``sqlite3.OperationalError: database is locked`` used to end it for good)."""
        while True:
            try:
                changes = await self.check_once()
                if changes and callable(self._on_change):
                    self._on_change(changes)
            except (NodeUnavailable, NodeError) as exc:
                log.warning("maturity_check_failed", error=str(exc))
            await asyncio.sleep(self._interval)


log = structlog.get_logger("pool.node.payouts")
COMMENT_PREFIX = "pool-payout-"


class InjectedCrash(Exception):
    """Test hook: simulates the process dying right after sendmany returned."""


def sats_to_btc(sats: int) -> Decimal:
    return (Decimal(sats) / Decimal(100_000_000)).quantize(Decimal("0.00000001"))


class PaymentProcessor:
    def __init__(self, wallet: NodeClient, ledger: Ledger, threshold: int, interval: float, grace: float) -> None:
        self._wallet = wallet
        self._ledger = ledger
        self._threshold = threshold
        self._interval = interval
        self._grace = grace
        self.crash_after_send = False  # fault injection for tests

    async def reconcile(self) -> int:
        """Settle ``sending`` batches left by a crash; returns how many batches were settled."""
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(
            None, self._ledger.query,
            "SELECT batch, MIN(created_at) FROM payments WHERE status='sending' GROUP BY batch",
        )
        if not rows:
            return 0
        txs = await self._wallet.call("listtransactions", "*", 10_000, 0, True)
        by_comment = {tx.get("comment"): tx.get("txid") for tx in txs if tx.get("category") == "send"}
        settled = 0
        for batch, created in rows:
            txid = by_comment.get(COMMENT_PREFIX + batch)
            if txid:
                await loop.run_in_executor(None, self._ledger.run_sync,
                                           lambda c, b=batch, t=txid: book.finish_payments(c, b, "sent", t))
                log.warning("payment_reconciled", batch=batch, txid=txid)
                settled += 1
            elif time.time() - created > self._grace:
                await loop.run_in_executor(None, self._ledger.run_sync,
                                           lambda c, b=batch: book.finish_payments(c, b, "failed", None))
                log.warning("payment_never_sent", batch=batch)
                settled += 1
        return settled

    async def pay_once(self) -> str | None:
        """One payment round; returns the txid when something was paid."""
        await self.reconcile()
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._ledger.query,
                                      "SELECT 1 FROM payments WHERE status='sending' LIMIT 1"):
            return None  # an unsettled batch exists: never start another before it is known
        batch = secrets.token_hex(8)
        due = await loop.run_in_executor(None, self._ledger.run_sync,
                                         lambda c: book.create_payments(c, batch, self._threshold))
        if not due:
            return None
        amounts = {address: sats_to_btc(amount) for address, amount in due}
        try:
            txid = await self._wallet.call("sendmany", "", amounts, 1, COMMENT_PREFIX + batch)
        except NodeError as exc:
            # bitcoind refused (e.g. insufficient funds): nothing was sent.
            await loop.run_in_executor(None, self._ledger.run_sync,
                                       lambda c: book.finish_payments(c, batch, "failed", None))
            log.error("payment_failed", batch=batch, error=str(exc))
            return None
        except NodeUnavailable:
            log.error("payment_outcome_unknown", batch=batch)  # reconcile() settles it later
            return None
        if self.crash_after_send:
            raise InjectedCrash(batch)
        await loop.run_in_executor(None, self._ledger.run_sync,
                                   lambda c: book.finish_payments(c, batch, "sent", str(txid)))
        log.info("payment_sent", batch=batch, txid=txid, payees=len(due), total=sum(a for _, a in due))
        return str(txid)

    async def run(self) -> None:
        """Pay forever; node trouble is a warning, anything else ends the run for the supervisor to log,
        count and restart."""
        while True:
            try:
                await self.pay_once()
            except (NodeUnavailable, NodeError) as exc:
                log.warning("payment_round_failed", error=str(exc))
            await asyncio.sleep(self._interval)
