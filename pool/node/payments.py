"""Automatic payments through bitcoind's wallet, never twice.

Order of events for one round: (1) in one ledger transaction, every due balance becomes a ``sending`` payment
row tagged with a batch id; (2) ``sendmany`` with the batch id as the transaction comment; (3) the rows become
``sent`` with the txid. A crash between (2) and (3) leaves ``sending`` rows: reconciliation looks the batch id up
among the wallet's transactions and marks them sent (found) or failed (not found after the grace period, so the
balance becomes payable again). The balance already counts ``sending`` rows, so no round can pay them again.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from decimal import Decimal

import structlog

from pool.ledger import book
from pool.ledger.sqlite import Ledger
from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.payments")
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
        while True:
            try:
                await self.pay_once()
            except (NodeUnavailable, NodeError) as exc:
                log.warning("payment_round_failed", error=str(exc))
            await asyncio.sleep(self._interval)
