"""The coordinator's money rules, driven without sockets: one credit per piece of work whatever job id it
arrives under, late block solutions still submitted, SOLO shares judged on the coinbase that pays them.

A real SQLite ledger in a temp dir records what the coordinator decides; the block submitter is a recorder
(the network side has its own tests). Shares are mined with the independent helpers in ``tests.unit.helpers``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pool.bitcoin.address import address_to_script
from pool.config import parse_config
from pool.ledger.book import Policy
from pool.ledger.sqlite import Ledger
from pool.mining.jobs import Job, parse_template
from pool.mining.shares import Accepted, Reject, Rejected, Submission
from pool.mining.workers import parse_worker
from pool.ops.telemetry import Metrics
from pool.server.coordinator import JOB_MAX_AGE, Coordinator
from pool.stratum.events import ShareSubmitted
from tests.unit.helpers import DIFF1, find_nonce, make_gbt, regtest_address

EN1 = bytes.fromhex("0a0b0c0d")
EN2 = bytes.fromhex("0000000000000007")
POOL_ADDRESS = regtest_address(9)
MAINNET_BITS = "1d00ffff"  # difficulty 1: a 1e-6 share is no block
REGTEST_BITS = "207fffff"  # about every second hash is a block
TIP_A, TIP_B = "11" * 32, "22" * 32


class RecordingSubmitter:
    """Stands in for BlockSubmitter: remembers what would have been sent to bitcoind."""

    def __init__(self) -> None:
        self.blocks: list[Any] = []

    def submit_soon(self, block: Any) -> None:
        self.blocks.append(block)


def make_coordinator(tmp_path: Path, scheme: str = "pplns", pool_address: str | None = POOL_ADDRESS) -> Coordinator:
    payout: dict[str, Any] = {"scheme": scheme}
    if pool_address:
        payout["pool_address"] = pool_address
    config = parse_config({"node": {"network": "regtest"}, "payout": payout, "data_dir": str(tmp_path)}, env={})
    ledger = Ledger(tmp_path / "ledger.sqlite3", Policy(scheme, 100, 2.0))
    script = address_to_script(pool_address, "regtest") if pool_address else None
    return Coordinator(config, script, ledger, RecordingSubmitter(), Metrics())  # type: ignore[arg-type]


def template(bits: str = MAINNET_BITS, prevhash: str = TIP_A, n_txs: int = 3) -> Any:
    return parse_template(make_gbt(n_txs=n_txs, bits=bits, prevhash=prevhash))


def solve(job: Job, accept: Any, start: int = 0) -> str:
    """A nonce (hex) for ``job`` mined from its notify params, as a miner would."""
    return f"{find_nonce(job.notify_params(True), EN1, EN2, job.ntime, accept, start=start):08x}"


def submit(coord: Coordinator, worker: Any, job_id: str, nonce: str, ntime: int, difficulty: float = 1e-6
           ) -> tuple[Any, asyncio.Future[Any] | None]:
    sub = Submission(worker.full_name, job_id, EN2.hex(), f"{ntime:08x}", nonce)
    return coord.judge(ShareSubmitted(1, sub, worker, difficulty, 0), EN1)


def share_rows(coord: Coordinator) -> int:
    return int(coord.ledger.query("SELECT COUNT(*) FROM shares")[0][0])


@pytest.fixture
def worker() -> Any:
    return parse_worker(f"{regtest_address(1)}.rig", "x", "regtest")


async def test_one_solution_is_credited_once_across_every_job_of_a_tip(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path)
    t0 = 1000.0
    assert coord.set_template(template(), now=t0) is True
    original = coord.job_for(worker)
    assert original is not None
    # A refresh that brings the same template keeps the same job: nothing new is sent to miners.
    assert coord.set_template(template(), now=t0 + 10) is False
    assert coord.job_for(worker) is original
    # After JOB_MAX_AGE the same work is renewed under a new id (cpuminer drops work older than 120 s).
    assert coord.set_template(template(), now=t0 + JOB_MAX_AGE + 1) is True
    renewed = coord.job_for(worker)
    assert renewed is not None and renewed.job_id != original.job_id
    assert renewed.coinbase == original.coinbase  # byte-identical work under another id
    nonce = solve(original, lambda v: v <= DIFF1 / 1e-6)
    results = []
    for job_id in (original.job_id, renewed.job_id, original.job_id):
        result, committed = submit(coord, worker, job_id, nonce, original.ntime)
        results.append(result)
        if committed is not None:
            await committed
    assert isinstance(results[0], Accepted)
    assert [r.reason for r in results[1:]] == [Reject.DUPLICATE, Reject.DUPLICATE]
    assert share_rows(coord) == 1
    coord.ledger.close()


async def test_a_share_whose_ledger_write_failed_can_be_resubmitted(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path)
    coord.set_template(template())
    job = coord.job_for(worker)
    assert job is not None
    nonce = solve(job, lambda v: v <= DIFF1 / 1e-6)
    coord.ledger.close()  # every write now fails
    result, committed = submit(coord, worker, job.job_id, nonce, job.ntime)
    assert isinstance(result, Accepted) and committed is not None
    with pytest.raises(RuntimeError):
        await committed
    coord.forget(result)  # what the server does before answering "please resubmit"
    again, _ = submit(coord, worker, job.job_id, nonce, job.ntime)
    assert isinstance(again, Accepted)


async def test_stale_share_that_solves_its_block_is_still_submitted(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path)
    coord.set_template(template(REGTEST_BITS, TIP_A))
    old = coord.job_for(worker)
    assert old is not None
    network_target = old.prepared.network_target
    block_nonce = solve(old, lambda v: v <= network_target)
    miss_nonce = solve(old, lambda v: v > network_target)
    coord.set_template(template(REGTEST_BITS, TIP_B))  # a new tip arrives
    assert coord.job_for(worker) is not None
    result, committed = submit(coord, worker, old.job_id, block_nonce, old.ntime, difficulty=1e-12)
    assert isinstance(result, Rejected) and result.reason is Reject.STALE and committed is None
    assert result.block is not None
    submitter = coord.submitter
    assert isinstance(submitter, RecordingSubmitter)
    assert [b.block_hash for b in submitter.blocks] == [result.block.block_hash[::-1].hex()]
    await coord.drain()
    rows = coord.ledger.query("SELECT block_hash, status FROM blocks")
    assert rows == [(submitter.blocks[0].block_hash, "pending")]  # a candidate: the chain decides
    assert share_rows(coord) == 0  # the miner's answer is "stale": no share credit
    plain, _ = submit(coord, worker, old.job_id, miss_nonce, old.ntime, difficulty=1e-12)
    assert isinstance(plain, Rejected) and plain.reason is Reject.STALE and plain.block is None
    assert len(submitter.blocks) == 1
    coord.ledger.close()


async def test_solo_share_is_judged_on_the_coinbase_that_pays_its_worker(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path, scheme="solo", pool_address=None)
    coord.set_template(template(REGTEST_BITS))
    other = parse_worker(f"{regtest_address(2)}.rig", "x", "regtest")
    jobs = coord.jobs_for([worker, other, parse_worker(f"{regtest_address(1)}.rig2", "x", "regtest")])
    assert [j.payout_key for j in jobs] == [worker.address, other.address]  # one job per payout address
    mine, theirs = jobs
    nonce = solve(mine, lambda v: v <= mine.prepared.network_target)
    wrong, _ = submit(coord, other, mine.job_id, nonce, mine.ntime, difficulty=1e-12)
    assert isinstance(wrong, Rejected) and wrong.reason is Reject.WRONG_PAYOUT
    right, committed = submit(coord, worker, mine.job_id, nonce, mine.ntime, difficulty=1e-12)
    assert isinstance(right, Accepted) and right.is_block and committed is not None
    await committed
    # "true" for a block-solving share comes after the block's row is in the ledger
    assert len(coord.ledger.query("SELECT block_hash FROM blocks")) == 1
    await coord.drain()
    # No pool address: the coinbase has no fee output, so the ledger records no fee either.
    reward = mine.template.coinbase_value
    assert coord.ledger.query("SELECT address, fee, reward FROM blocks") == [(worker.address, 0, reward)]
    assert coord.ledger.query("SELECT address, amount FROM credits") == [(worker.address, reward)]
    coord.ledger.close()


async def test_solo_fee_recorded_is_the_fee_output_the_coinbase_carries(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path, scheme="solo")
    coord.set_template(template(REGTEST_BITS))
    job = coord.job_for(worker)
    assert job is not None and job.fee > 0
    pool_script = address_to_script(POOL_ADDRESS, "regtest")
    assert job.fee.to_bytes(8, "little") + bytes([len(pool_script)]) + pool_script in job.coinbase.coinb2
    nonce = solve(job, lambda v: v <= job.prepared.network_target)
    result, committed = submit(coord, worker, job.job_id, nonce, job.ntime, difficulty=1e-12)
    assert isinstance(result, Accepted) and result.is_block and committed is not None
    await committed
    await coord.drain()
    reward = job.template.coinbase_value
    assert coord.ledger.query("SELECT fee FROM blocks") == [(job.fee,)]
    assert coord.ledger.query("SELECT amount FROM credits") == [(reward - job.fee,)]
    coord.ledger.close()


async def test_a_block_row_the_ledger_could_not_take_is_replayed_after_a_restart(tmp_path: Path, worker: Any) -> None:
    """The ledger refuses every write (its writer is gone) when a block is found, and the pool is restarted:
    the block's row, journaled on disk first, reaches the ledger at the next start. Before, it was lost, and
    under PPLNS the coinbase paid the pool while no miner was ever credited."""
    coord = make_coordinator(tmp_path)
    coord.set_template(template(REGTEST_BITS))
    job = coord.job_for(worker)
    assert job is not None
    nonce = solve(job, lambda v: v <= job.prepared.network_target)
    coord.ledger.close()  # every write now fails
    result, committed = submit(coord, worker, job.job_id, nonce, job.ntime, difficulty=1e-12)
    assert isinstance(result, Accepted) and result.is_block and committed is not None
    with pytest.raises(RuntimeError):
        await committed  # the share itself is answered "not recorded"
    await coord.drain(timeout=1.5)  # shutdown: the row never landed
    rows = list((tmp_path / "blocks" / "rows").glob("*.json"))
    assert len(rows) == 1
    restarted = make_coordinator(tmp_path)
    assert await restarted.replay_block_rows() == 1
    block_hash = result.block_hash[::-1].hex()
    assert restarted.ledger.query("SELECT block_hash, status, reward, address FROM blocks") == [
        (block_hash, "pending", job.template.coinbase_value, worker.address)]
    assert list((tmp_path / "blocks" / "rows").glob("*.json")) == []
    assert await restarted.replay_block_rows() == 0
    restarted.ledger.close()


async def test_a_recorded_block_leaves_no_journal_entry(tmp_path: Path, worker: Any) -> None:
    coord = make_coordinator(tmp_path)
    coord.set_template(template(REGTEST_BITS))
    job = coord.job_for(worker)
    assert job is not None
    nonce = solve(job, lambda v: v <= job.prepared.network_target)
    result, committed = submit(coord, worker, job.job_id, nonce, job.ntime, difficulty=1e-12)
    assert isinstance(result, Accepted) and committed is not None
    await committed
    await coord.drain()
    assert len(coord.ledger.query("SELECT block_hash FROM blocks")) == 1
    assert list((tmp_path / "blocks" / "rows").glob("*.json")) == []
    coord.ledger.close()


def test_a_template_prepared_off_the_loop_is_used_as_is(tmp_path: Path) -> None:
    from pool.mining.jobs import PreparedTemplate

    coord = make_coordinator(tmp_path)
    t = template()
    ready = PreparedTemplate.from_template(t)
    assert coord.set_template(t, prepared=ready) is True
    assert coord.prepared is ready  # not computed again on the loop
    other = template(prevhash=TIP_B)
    assert coord.set_template(other, prepared=ready) is True  # a mismatched one is not trusted
    assert coord.prepared is not ready and coord.prepared.template is other
    coord.ledger.close()


async def test_forced_template_is_adopted_even_when_it_looks_like_the_current_work(tmp_path: Path) -> None:
    """A front-end's coordinator: the coordinator process renewed the work (it aged out for cpuminer); the
    front-end's clock saw the previous template a few ms later and would otherwise keep the old jobs."""
    coord = make_coordinator(tmp_path)
    assert coord.set_template(template(), now=100.0) is True
    assert coord.set_template(template(), now=100.0 + JOB_MAX_AGE - 0.01) is False
    assert coord.set_template(template(), now=100.0 + JOB_MAX_AGE - 0.01, force=True) is True
