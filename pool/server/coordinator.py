"""Jobs and shares for the whole pool: which job each miner gets, how its shares are judged and credited.

No sockets here: the server hands in protocol events and gets back values; block submission and the ledger
are reached through the objects passed in. This is the stratifier of the design, without the connector.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from pool.bitcoin.coinbase import TxOut
from pool.config import Config
from pool.ledger import journal
from pool.ledger.accounting import fee_basis_points
from pool.ledger.commit import Outcome
from pool.ledger.history import WorkHistory
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord
from pool.mining.best import BestShares
from pool.mining.jobs import BlockTemplate, Job, JobBook, PreparedTemplate, make_job
from pool.mining.shares import Accepted, Reject, ShareResult, check_submission
from pool.mining.stats import PoolStats
from pool.mining.workers import Worker
from pool.node.blocks import BlockSubmitter, FoundBlock
from pool.ops.telemetry import Metrics
from pool.stratum.events import ShareSubmitted

log = structlog.get_logger("pool.coordinator")


JOB_MAX_AGE = 90.0  # seconds: an unchanged template still gets a new job by then (cpuminer idles at 120 s)
RECORD_BLOCK_RETRY = (0.5, 30.0)  # first and longest wait between attempts to write a found block's row


class Coordinator:
    """Owns the job book and the current template; judges and credits shares."""

    def __init__(
        self,
        config: Config,
        pool_script: bytes | None,
        ledger: Ledger,
        submitter: BlockSubmitter | None,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.pool_script = pool_script
        self.ledger = ledger
        self.submitter = submitter
        self.metrics = metrics
        self.book = JobBook()
        self.prepared: PreparedTemplate | None = None
        self._jobs_by_key: dict[str, Job] = {}
        self._tag = config.stratum.pool_tag.encode()
        self.solo = config.payout.scheme == "solo"
        self.blocks_found = 0
        self.last_block: FoundBlock | None = None
        self.stats = PoolStats()
        self.history = WorkHistory()  # accepted work per minute for the charts, written by HistoryWriter
        self.best = BestShares()  # loaded from the ledger at start (PoolApp)
        self._prepared_at = 0.0
        self._block_writes: set[asyncio.Task[None]] = set()
        self._journal_dir = Path(config.data_dir) / "blocks" / "rows"
        self._late_blocks: OrderedDict[bytes, None] = OrderedDict()
        self._bests: dict[tuple[str, str], Any] = {}  # raised best-share records not yet handed to the ledger
        self.on_block: Callable[[FoundBlock], None] | None = None  # a front-end process tells its coordinator
        # Per-share counters resolved once: a labels() lookup per share is measurable on the hot path.
        self._accepted_count = metrics.shares.labels("accepted")
        self._rejected_count = metrics.shares.labels("rejected")
        self._reject_counts = {reason: metrics.share_rejects.labels(reason.value) for reason in Reject}

    # ---- work ----------------------------------------------------------------------------------------------

    def set_template(self, template: BlockTemplate, now: float | None = None,
                     prepared: PreparedTemplate | None = None, force: bool = False) -> bool:
        """Adopt a new template; jobs are built lazily per payout variant.

        Returns False, keeping the current jobs, when the template gives the same work as the current one
        (a refresh, or ZMQ and long poll both announcing the same block): a byte-identical job under a new
        id only costs miners a restart. After ``JOB_MAX_AGE`` the work is renewed anyway so miners that
        drop old work (cpuminer after 120 s) keep mining; duplicates are judged per tip, so that renewal
        cannot credit one solution twice. ``force``: a front-end process adopts what its coordinator decided
        is new work (its own clock would judge the template's age a little differently).
        """
        now = time.monotonic() if now is None else now
        current = self.prepared
        if not force and current is not None and current.same_work(template) \
                and now - self._prepared_at < JOB_MAX_AGE:
            return False
        # Prepared on a worker thread by the template source when it can be (merkle branch, commitment).
        self.prepared = prepared if prepared is not None and prepared.template is template \
            else PreparedTemplate.from_template(template)
        self._prepared_at = now
        self._jobs_by_key.clear()
        self.metrics.template_height.set(template.height)
        self.metrics.network_difficulty.set(self.prepared.network_difficulty)
        return True

    def _solo_fee(self, value: int) -> int:
        """The fee output of a SOLO coinbase: none without a pool address (so none is recorded either)."""
        return value * fee_basis_points(self.config.payout.fee_percent) // 10_000 if self.pool_script else 0

    def _outputs(self, worker: Worker) -> tuple[str, list[TxOut], int]:
        assert self.prepared is not None
        value = self.prepared.template.coinbase_value
        if not self.solo:
            assert self.pool_script is not None
            return "", [TxOut(value, self.pool_script)], 0
        fee = self._solo_fee(value)
        outputs = [TxOut(value - fee, worker.script)]
        if fee:
            assert self.pool_script is not None
            outputs.append(TxOut(fee, self.pool_script))
        return worker.address, outputs, fee

    def job_for(self, worker: Worker) -> Job | None:
        """Current job for this worker's payout variant (one shared job for pooled schemes)."""
        if self.prepared is None:
            return None
        # Looked up before the outputs are built: a new tip asks this for every connection, and building the
        # outputs (dataclass instances) for a job that exists already was a fifth of a fan-out's time.
        job = self._jobs_by_key.get(worker.address if self.solo else "")
        if job is None:
            key, outputs, fee = self._outputs(worker)
            job = make_job(
                self.book.next_id(),
                self.prepared,
                outputs,
                self._tag,
                self.config.stratum.extranonce1_size + self.config.stratum.extranonce2_size,
                time.time(),
                key,
                fee,
            )
            self.book.add(job)
            self._jobs_by_key[key] = job
        return job

    def jobs_for(self, workers: Iterable[Worker]) -> list[Job]:
        """The jobs one connection needs: one shared job, or under SOLO one per payout address it carries,
        so each worker's shares are judged on the coinbase that pays that worker."""
        if not self.solo:  # one job for everyone: any worker of the connection finds it
            for worker in workers:
                job = self.job_for(worker)
                return [job] if job is not None else []
            return []
        jobs: list[Job] = []
        keys: set[str] = set()
        for worker in workers:
            key = worker.address
            if key in keys:
                continue
            keys.add(key)
            job = self.job_for(worker)
            if job is not None:
                jobs.append(job)
        return jobs

    # ---- shares --------------------------------------------------------------------------------------------

    def judge(self, event: ShareSubmitted, extranonce1: bytes) -> tuple[ShareResult, Outcome | None]:
        """Judge a share; an accepted one is queued to the ledger (the future resolves at its commit).

        The share is queued before its block, so the block's PPLNS window includes the share that found it.
        """
        worker = event.worker
        now = time.time()
        result = check_submission(
            event.submission,
            self.book,
            extranonce1,
            self.config.stratum.extranonce2_size,
            event.difficulty,
            event.version_mask,
            now,
            worker.address,
        )
        if isinstance(result, Accepted):
            self._accepted_count.inc()
            self.metrics.accepted_difficulty.inc(result.difficulty)
            self.stats.accepted(worker.address, worker.name, result.difficulty, now)
            self.history.add(worker.address, worker.name, result.difficulty, now)
            committed = self.ledger.record_share(self.share_record(result, worker))
            record = self.best.offer(worker.address, worker.name, result.hash_difficulty, now)
            if record is not None:  # written behind the share, with the others raised in this loop turn
                self._queue_best(record)
            if result.is_block:
                committed = _after(committed, self._block_found(result, worker))
            return result, committed
        self._rejected_count.inc()
        self._reject_counts[result.reason].inc()
        self.stats.rejected(worker.address, worker.name, now)
        if result.block is not None and result.block.block_hash not in self._late_blocks:
            # Each one took block-level work; remembered so a replay is not sent again.
            self._late_blocks[result.block.block_hash] = None
            while len(self._late_blocks) > 1024:
                self._late_blocks.popitem(last=False)
            log.warning("stale_block_candidate", job_id=event.submission.job_id, worker=worker.full_name)
            self._block_found(result.block, worker)
        return result, None

    def _queue_best(self, record: Any) -> None:
        """Raised records go to the ledger once per loop turn, as one write (a worker's newest replaces its
        earlier ones): rare in steady state, but every worker's first shares after a start raise it."""
        if not self._bests:
            asyncio.get_running_loop().call_soon(self._write_bests)
        self._bests[(record.address, record.worker)] = record.row()

    def _write_bests(self) -> None:
        rows, self._bests = list(self._bests.values()), {}
        if rows:
            self.ledger.record_bests(rows).add_done_callback(_best_written)

    def forget(self, result: Accepted) -> None:
        """The share's ledger write failed: un-claim it so the resubmission the miner was asked for counts."""
        self.book.release(result.job, result.block_hash)

    def share_record(self, result: Accepted, worker: Worker) -> ShareRecord:
        t = result.job.template
        return ShareRecord(
            ts=time.time(),
            address=worker.address,
            worker=worker.name,
            difficulty=result.difficulty,
            share_difficulty=result.hash_difficulty,
            job_id=result.job.job_id,
            height=result.job.template.height,
            block_hash=result.block_hash[::-1].hex(),
            is_block=result.is_block,
            network_difficulty=result.job.network_difficulty,
            subsidy=t.coinbase_value - t.total_fees,
            expected_fees=t.total_fees,
        )

    def _block_found(self, result: Accepted, worker: Worker) -> Outcome:
        """Send the block on its way first, then record it; the row is retried until the ledger takes it.
        Returns the first write of the row."""
        job = result.job
        block_hash = result.block_hash[::-1].hex()
        block_hex = job.block_bytes(result.header, result.extranonce1, result.extranonce2).hex()
        found = FoundBlock(
            height=job.template.height,
            block_hash=block_hash,
            block_hex=block_hex,
            worker=worker.full_name,
            reward=job.template.coinbase_value,
            found_at=time.time(),
        )
        if self.submitter is not None:
            self.submitter.submit_soon(found)
        self.blocks_found += 1
        self.last_block = found
        self.best.new_round()
        self.metrics.blocks.labels("found").inc()
        if self.on_block is not None:
            self.on_block(found)
        log.info("block_found", height=found.height, block_hash=block_hash, worker=worker.full_name)
        t = job.template
        record = BlockRecord(
            block_hash=block_hash,
            height=found.height,
            address=worker.address,
            worker=worker.name,
            reward=found.reward,
            subsidy=t.coinbase_value - t.total_fees,
            network_difficulty=job.network_difficulty,
            found_at=found.found_at,
            fee=job.fee if self.solo else None,
        )
        first = self.ledger.record_block(record)
        task = asyncio.create_task(self._record_block(record, first), name=f"record-block-{block_hash[:16]}")
        self._block_writes.add(task)
        task.add_done_callback(self._block_writes.discard)
        return first

    async def _record_block(self, record: BlockRecord, first: Outcome) -> None:
        """The row was queued to the ledger at once (``first``: right behind the finding share, so the PPLNS
        window ends at that share); meanwhile it is journaled on disk. It is retried until it lands, and the
        journal entry goes when it has. A restart in between replays it (``replay_block_rows``)."""
        journaled = asyncio.ensure_future(asyncio.to_thread(journal.write, self._journal_dir, record))
        delay, longest = RECORD_BLOCK_RETRY
        attempt = 0
        pending: Outcome | None = first
        while True:
            attempt += 1
            try:
                await (pending if pending is not None else self.ledger.record_block(record))
                break
            except Exception as exc:  # the block row must land: log, count and try again
                self.metrics.ledger_block_write_failures.inc()
                log.critical("block_record_failed", block_hash=record.block_hash, attempt=attempt, error=str(exc))
            pending = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)
        try:
            await journaled
        except OSError as exc:  # a full disk; the row is in the ledger anyway
            log.critical("block_row_journal_failed", block_hash=record.block_hash, error=str(exc))
            return
        try:
            await asyncio.to_thread(journal.remove, self._journal_dir, record.block_hash)
        except OSError as exc:  # harmless: the replay at the next start finds the row already there
            log.warning("block_row_journal_not_removed", block_hash=record.block_hash, error=str(exc))

    async def replay_block_rows(self) -> int:
        """At start: rows of found blocks journaled but perhaps never written (a restart while the ledger
        could not take them) go to the ledger now; returns how many were replayed."""
        records = await asyncio.to_thread(journal.pending, self._journal_dir)
        for record in records:
            log.warning("block_row_replayed", block_hash=record.block_hash, height=record.height)
            await self.ledger.record_block(record)
            await asyncio.to_thread(journal.remove, self._journal_dir, record.block_hash)
        return len(records)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for found blocks' rows at shutdown."""
        if self._block_writes:
            await asyncio.wait(list(self._block_writes), timeout=timeout)
        for task in list(self._block_writes):  # still failing: the journaled row is replayed at the next start
            task.cancel()


def _best_written(done: Outcome) -> None:
    """A best-share record that did not land is logged; the next record of that worker carries it again."""
    if not done.cancelled() and done.exception() is not None:
        log.warning("best_share_not_recorded", error=str(done.exception()))


def _after(share: Outcome, block_row: Outcome) -> asyncio.Future[Any]:
    """The share's own commit, reported once its block's first row write is done too (whatever its outcome:
    that row is retried apart), so "true" for a block-solving share comes after the block is in the ledger."""
    both: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def report(_: Outcome) -> None:
        if both.done():
            return
        if not share.done():  # the writer answers in queue order, so this is only a safeguard
            share.add_done_callback(report)
        elif share.cancelled():
            both.cancel()
        elif share.exception() is not None:
            both.set_exception(share.exception())  # type: ignore[arg-type]
        else:
            both.set_result(share.result())

    block_row.add_done_callback(report)
    return both
