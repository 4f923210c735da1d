"""Jobs and shares for the whole pool: which job each miner gets, how its shares are judged and credited.

No sockets here: the server hands in protocol events and gets back values; block submission and the ledger
are reached through the objects passed in. This is the stratifier of the design, without the connector.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog

from pool.bitcoin.coinbase import TxOut
from pool.bitcoin.target import target_to_difficulty
from pool.config import Config
from pool.ledger.accounting import fee_basis_points
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord
from pool.mining.jobs import BlockTemplate, Job, JobBook, PreparedTemplate, make_job
from pool.mining.shares import Accepted, ShareResult, check_submission
from pool.mining.stats import PoolStats
from pool.mining.workers import Worker
from pool.node.blocks import BlockSubmitter, FoundBlock
from pool.ops.telemetry import Metrics
from pool.stratum.events import ShareSubmitted

log = structlog.get_logger("pool.coordinator")


@dataclass(frozen=True, slots=True)
class JobChoice:
    """The job a miner should work on and whether it replaces everything it had."""

    job: Job
    clean: bool


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

    # ---- work ----------------------------------------------------------------------------------------------

    def set_template(self, template: BlockTemplate) -> None:
        """Adopt a new template; jobs are built lazily per payout variant."""
        self.prepared = PreparedTemplate.from_template(template)
        self._jobs_by_key.clear()
        self.metrics.template_height.set(template.height)
        self.metrics.network_difficulty.set(target_to_difficulty(template.network_target))

    def _outputs(self, worker: Worker) -> tuple[str, list[TxOut]]:
        assert self.prepared is not None
        value = self.prepared.template.coinbase_value
        if not self.solo:
            assert self.pool_script is not None
            return "", [TxOut(value, self.pool_script)]
        fee = value * fee_basis_points(self.config.payout.fee_percent) // 10_000 if self.pool_script else 0
        outputs = [TxOut(value - fee, worker.script)]
        if fee:
            assert self.pool_script is not None
            outputs.append(TxOut(fee, self.pool_script))
        return worker.address, outputs

    def job_for(self, worker: Worker) -> Job | None:
        """Current job for this worker's payout variant (one shared job for pooled schemes)."""
        if self.prepared is None:
            return None
        key, outputs = self._outputs(worker)
        job = self._jobs_by_key.get(key)
        if job is None:
            job = make_job(
                self.book.next_id(),
                self.prepared,
                outputs,
                self._tag,
                self.config.stratum.extranonce1_size + self.config.stratum.extranonce2_size,
                time.time(),
                key,
            )
            self.book.add(job)
            self._jobs_by_key[key] = job
        return job

    def fresh_job_for(self, worker: Worker) -> Job | None:
        """Same work under a new id, so a difficulty change applies to it alone (old ids keep theirs).

        The clone shares the original's duplicate set: one solution cannot be credited under both ids.
        """
        job = self.job_for(worker)
        if job is None:
            return None
        clone = Job(self.book.next_id(), job.prepared, job.coinbase, job.ntime, time.time(), job.payout_key, job.seen)
        self.book.add(clone)
        return clone

    # ---- shares --------------------------------------------------------------------------------------------

    def judge(self, event: ShareSubmitted, extranonce1: bytes) -> tuple[ShareResult, asyncio.Future[Any] | None]:
        """Judge a share; an accepted one is queued to the ledger (the future resolves at its commit).

        The share is queued before its block, so the block's PPLNS window includes the share that found it.
        """
        result = check_submission(
            event.submission,
            self.book,
            extranonce1,
            self.config.stratum.extranonce2_size,
            event.difficulty,
            event.version_mask,
            time.time(),
        )
        worker = event.worker
        if isinstance(result, Accepted):
            self.metrics.shares.labels("accepted").inc()
            self.metrics.accepted_difficulty.inc(result.difficulty)
            self.stats.accepted(worker.address, worker.name, result.difficulty, time.time())
            committed = self.ledger.record_share(self.share_record(result, worker))
            if result.is_block:
                self._block_found(result, worker)
            return result, committed
        self.metrics.shares.labels("rejected").inc()
        self.metrics.share_rejects.labels(result.reason.value).inc()
        self.stats.rejected(worker.address, worker.name)
        return result, None

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
            network_difficulty=target_to_difficulty(result.job.prepared.network_target),
            subsidy=t.coinbase_value - t.total_fees,
            expected_fees=t.total_fees,
        )

    def _block_found(self, result: Accepted, worker: Worker) -> None:
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
        self.blocks_found += 1
        self.last_block = found
        self.metrics.blocks.labels("found").inc()
        log.info("block_found", height=found.height, block_hash=block_hash, worker=worker.full_name)
        t = job.template
        self.ledger.record_block(
            BlockRecord(
                block_hash=block_hash,
                height=found.height,
                address=worker.address,
                worker=worker.name,
                reward=found.reward,
                subsidy=t.coinbase_value - t.total_fees,
                network_difficulty=target_to_difficulty(job.prepared.network_target),
                found_at=found.found_at,
            )
        )
        if self.submitter is not None:
            self.submitter.submit_soon(found)
