"""Found blocks: sent to bitcoind at once on a path of their own, kept on disk, retried until answered.

A found block must never be lost, and every millisecond before ``submitblock`` leaves is a chance for a
competing block. So, the moment the share path hands a block over:

* ``submitblock`` goes to every configured node, each through a ``NodeClient`` reserved for submission (one
  thread, one keep-alive connection): it never queues behind template, maturity or payment RPC, nor behind file
  work on the default thread pool;
* in parallel, on a thread of its own, the block is written and fsynced to ``blocks/…pending.hex``, so a crash
  before bitcoind has it is repaired at the next start by ``resubmit_pending``. A failed write (disk full, I/O
  error) is logged as critical and counted, and never stops the submission;
* each node is asked again, with capped exponential backoff, until it gives a definite answer: accepted
  (``None``, "duplicate", "inconclusive"), or a rejection reason. Being unreachable is not an answer, however
  long it lasts.

The ledger status of a block is finally decided from the chain, not from these answers: the maturity tracker
re-checks blocks that are pending or were rejected and restores their credits if the block is in the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pool.node.rpc import NodeClient, NodeError, NodeUnavailable

log = structlog.get_logger("pool.node.blocks")

ACCEPTED_RESULTS = (None, "duplicate", "duplicate-inconclusive", "inconclusive")
# submitblock errors that are an answer about the block itself (decode failed, no coinbase, ...); any other
# error (warm-up, credentials, a busy node) is retried like an unreachable node.
DEFINITE_ERROR_CODES = (-22, -25, -26)


@dataclass(frozen=True, slots=True)
class FoundBlock:
    """What the share path knows about a solved block."""

    height: int
    block_hash: str  # display hex
    block_hex: str
    worker: str
    reward: int
    found_at: float
    found_clock: float = field(default_factory=time.perf_counter)  # for share → submit latency


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    block: FoundBlock
    accepted: bool
    confirmed: bool
    result: str  # "accepted", "duplicate", "inconclusive", or bitcoind's rejection reason
    attempts: int  # submitblock calls made to the node that answered (1: first try)
    sent_seconds: float | None = None  # share → first submitblock request sent
    resolved_seconds: float | None = None  # share → definite answer


OutcomeCallback = Callable[[SubmitOutcome], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff between submitblock attempts while a node does not answer (no attempt limit)."""

    initial_delay: float = 0.2
    max_delay: float = 5.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_delay
        while True:
            yield delay
            delay = min(delay * 2, self.max_delay)


@dataclass(slots=True)
class _Answer:
    client: NodeClient
    result: str
    accepted: bool
    attempts: int


class BlockSubmitter:
    """Owns the life of a found block from share to a definite answer from bitcoind."""

    def __init__(
        self,
        clients: NodeClient | Sequence[NodeClient],
        blocks_dir: Path,
        on_outcome: OutcomeCallback | None = None,
        *,
        retry: RetryPolicy | None = None,
        on_sent: Callable[[FoundBlock, float], None] | None = None,
        on_write_failed: Callable[[FoundBlock, OSError], None] | None = None,
    ) -> None:
        self._clients = [clients] if isinstance(clients, NodeClient) else list(clients)
        if not self._clients:
            raise ValueError("BlockSubmitter needs at least one node client")
        self._dir = Path(blocks_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._on_outcome = on_outcome
        self._on_sent = on_sent
        self._on_write_failed = on_write_failed
        self._retry = retry or RetryPolicy()
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="block-file")
        self._tasks: set[asyncio.Task[object]] = set()
        # Nodes still being sent a block another node already answered for (one may be down for hours):
        # not waited for at shutdown.
        self._extras: set[asyncio.Future[object]] = set()
        self._unresolved: dict[str, FoundBlock] = {}
        self._sent_at: dict[str, float] = {}  # block hash -> perf_counter when its first request went out

    # ---- state for metrics and the maturity tracker -----------------------------------------------------------

    def unresolved(self) -> set[str]:
        """Hashes of blocks still waiting for a definite answer (the maturity tracker leaves them alone)."""
        return set(self._unresolved)

    def oldest_unresolved_age(self) -> float:
        now = time.perf_counter()
        return max((now - b.found_clock for b in self._unresolved.values()), default=0.0)

    # ---- submission ----------------------------------------------------------------------------------------

    def submit_soon(self, block: FoundBlock, write: bool = True) -> asyncio.Task[SubmitOutcome]:
        """Send the block now and keep at it in the background; the share reply does not wait for bitcoind.

        The first ``submitblock`` of every node and the file write are handed to their threads before this
        returns, so nothing else the event loop does first can delay them.
        """
        loop = asyncio.get_running_loop()
        self._unresolved[block.block_hash] = block
        hook = self._sent_hook(loop, block)
        firsts = [c.start_call("submitblock", block.block_hex, on_sent=hook) for c in self._clients]
        written = loop.run_in_executor(self._files, self._write_pending, block) if write else None
        task = asyncio.create_task(self._submit(block, firsts, written), name=f"submit-{block.block_hash[:16]}")
        self._track(task)
        return task

    def _track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _sent_hook(self, loop: asyncio.AbstractEventLoop, block: FoundBlock) -> Callable[[float], None]:
        def sent(at: float) -> None:  # runs in a submit thread, right after the request bytes went out
            if self._sent_at.setdefault(block.block_hash, at) == at:
                if self._on_sent is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._on_sent, block, at - block.found_clock)

        return sent

    async def _submit(self, block: FoundBlock, firsts: list[asyncio.Future[object]],
                      written: asyncio.Future[Path | None] | None) -> SubmitOutcome:
        per_node = [asyncio.ensure_future(self._until_answered(c, block, first))
                    for c, first in zip(self._clients, firsts, strict=True)]
        answer: _Answer | None = None
        rejections: list[_Answer] = []
        try:
            for next_answer in asyncio.as_completed(per_node):
                got = await next_answer
                if got.accepted:
                    answer = got
                    break
                rejections.append(got)
        except asyncio.CancelledError:
            for t in per_node:
                t.cancel()
            self._unresolved.pop(block.block_hash, None)
            self._sent_at.pop(block.block_hash, None)
            log.error("block_submission_stopped", height=block.height, block_hash=block.block_hash,
                      note="still pending on disk; resubmitted at the next start" if written else "")
            raise
        for t in per_node:  # the other nodes still get the block, in the background
            if not t.done():
                self._extras.add(t)
                t.add_done_callback(self._extras.discard)
        answer = answer or rejections[0]
        resolved = time.perf_counter() - block.found_clock
        self._unresolved.pop(block.block_hash, None)
        confirmed = await self._confirm(answer.client, block) if answer.accepted else False
        path = await written if written is not None else self._existing_pending(block)
        if confirmed:
            await self._rename(path, block, "confirmed")
            log.info("block_confirmed", height=block.height, block_hash=block.block_hash, worker=block.worker,
                     attempts=answer.attempts)
        elif not answer.accepted:
            await self._rename(path, block, "rejected")
            log.error("block_rejected", height=block.height, block_hash=block.block_hash, result=answer.result)
        else:
            log.error("block_unconfirmed", height=block.height, block_hash=block.block_hash, result=answer.result)
        sent_at = self._sent_at.pop(block.block_hash, None)
        sent = None if sent_at is None else sent_at - block.found_clock
        outcome = SubmitOutcome(block, answer.accepted, confirmed, answer.result, answer.attempts, sent, resolved)
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome

    async def _until_answered(self, client: NodeClient, block: FoundBlock,
                              first: asyncio.Future[object]) -> _Answer:
        """submitblock to one node until it answers about the block; unreachable is retried, forever."""
        delays = self._retry.delays()
        attempts = 0
        pending: asyncio.Future[object] | None = first
        while True:
            attempts += 1
            if pending is None:
                pending = client.start_call("submitblock", block.block_hex,
                                            on_sent=self._sent_hook(asyncio.get_running_loop(), block))
            try:
                reply = await pending
            except NodeUnavailable as exc:
                log.warning("submitblock_retry", block_hash=block.block_hash, node=client.url, attempt=attempts,
                            error=str(exc))
            except NodeError as exc:
                if exc.code in DEFINITE_ERROR_CODES:
                    return _Answer(client, f"error {exc.code}: {exc.message}", False, attempts)
                log.warning("submitblock_error", block_hash=block.block_hash, node=client.url, attempt=attempts,
                            error=str(exc))
            except Exception as exc:  # whatever went wrong, the block is not answered for: keep trying
                log.error("submitblock_unexpected_error", block_hash=block.block_hash, node=client.url,
                          attempt=attempts, error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            else:
                result = "accepted" if reply is None else str(reply)
                return _Answer(client, result, reply in ACCEPTED_RESULTS, attempts)
            finally:
                pending = None
            await asyncio.sleep(next(delays))

    async def _confirm(self, client: NodeClient, block: FoundBlock, attempts: int = 10) -> bool:
        """Ask bitcoind for the block by hash: it must be in its index (and normally the active chain).

        The node that accepted it is asked first; while it is unreachable (it may have died right after
        answering), the other nodes are asked too: they get every block, though perhaps a moment later."""
        others = [c for c in self._clients if c is not client]
        for i in range(attempts):
            for node in (client, *others):
                try:
                    header = await node.call("getblockheader", block.block_hash)
                except NodeError:
                    if node is client:
                        return False  # the node that accepted it does not know it
                    continue  # another node may not have it yet
                except NodeUnavailable:
                    continue
                return isinstance(header, dict) and header.get("hash") == block.block_hash
            await asyncio.sleep(min(0.2 * 2**i, 5.0))
        return False

    # ---- files (on the block-file thread) -------------------------------------------------------------------

    def _path(self, block: FoundBlock, state: str) -> Path:
        return self._dir / f"{block.height:08d}-{block.block_hash}.{state}.hex"

    def _existing_pending(self, block: FoundBlock) -> Path | None:
        path = self._path(block, "pending")
        return path if path.exists() else None

    def _write_pending(self, block: FoundBlock) -> Path | None:
        """Write and fsync the block; a failure is critical but must never stop its submission."""
        path = self._path(block, "pending")
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{block.worker}\n{block.reward}\n{block.block_hex}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            log.critical("block_file_write_failed", height=block.height, block_hash=block.block_hash,
                         path=str(path), error=f"{type(exc).__name__}: {exc}",
                         note="the block is being submitted anyway; it cannot be resubmitted after a crash")
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            if self._on_write_failed is not None:
                self._on_write_failed(block, exc)
            return None
        return path

    async def _rename(self, path: Path | None, block: FoundBlock, state: str) -> None:
        if path is None:
            return

        def move() -> None:
            try:
                os.replace(path, self._path(block, state))
            except OSError as exc:
                log.error("block_file_rename_failed", block_hash=block.block_hash, error=str(exc))

        await asyncio.get_running_loop().run_in_executor(self._files, move)

    # ---- start-up and shutdown --------------------------------------------------------------------------------

    def resubmit_pending(self) -> list[asyncio.Task[SubmitOutcome]]:
        """Blocks left pending by a crash are submitted again at start-up (in the background)."""
        tasks = []
        for path in sorted(self._dir.glob("*.pending.hex")):
            height_text, _, rest = path.name.partition("-")
            block_hash = rest.split(".", 1)[0]
            try:
                worker, reward, block_hex = path.read_text().split("\n")[:3]
                block = FoundBlock(int(height_text), block_hash, block_hex, worker, int(reward), time.time())
            except (OSError, ValueError) as exc:
                log.error("pending_block_unreadable", path=str(path), error=str(exc))
                continue
            log.warning("resubmitting_pending_block", height=block.height, block_hash=block_hash)
            tasks.append(self.submit_soon(block, write=False))
        return tasks

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for in-flight submissions at shutdown; what is left stays pending on disk. Sending a block to
        the other nodes once one has answered for it is not waited for."""
        for extra in list(self._extras):
            extra.cancel()
        if self._tasks:
            _, left = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in left:
                task.cancel()
            if left:
                await asyncio.wait(left, timeout=5)
        self._files.shutdown(wait=True)
