"""The ledger (pool.ledger.sqlite + book) on both backends, SQLite and PostgreSQL: group-commit writes, credits
per scheme, block states, balances and payments, and the operator reports / CLI on top of it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pool.ledger import book
from pool.ledger.accounting import pps_value
from pool.ledger.book import Policy
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord
from tests.support.payout_check import recompute_pplns

COIN = 100_000_000
ROOT = Path(__file__).resolve().parents[2]
A, B, C = "bcrt1qaddressaaaa", "bcrt1qaddressbbbb", "bcrt1qaddresscccc"

_counter = [0]


def _hash() -> str:
    _counter[0] += 1
    return f"{_counter[0]:064x}"


def share(address: str, worker: str = "w", difficulty: float = 1.0, *, block_hash: str | None = None,
          is_block: bool = False, network_difficulty: float = 0.0, subsidy: int = 0,
          expected_fees: int = 0) -> ShareRecord:
    return ShareRecord(ts=time.time(), address=address, worker=worker, difficulty=difficulty,
                       share_difficulty=difficulty * 3, job_id="1a", height=101,
                       block_hash=block_hash or _hash(), is_block=is_block,
                       network_difficulty=network_difficulty, subsidy=subsidy, expected_fees=expected_fees)


def block(block_hash: str, address: str, worker: str = "w", reward: int = 50 * COIN,
          network_difficulty: float = 10.0, height: int = 101) -> BlockRecord:
    return BlockRecord(block_hash=block_hash, height=height, address=address, worker=worker, reward=reward,
                       subsidy=reward, network_difficulty=network_difficulty, found_at=time.time())


async def find_block(ledger: Ledger, address: str, worker: str = "w", difficulty: float = 1.0,
                     **kw: object) -> tuple[str, dict]:
    """Record a block-finding share and its block the way the coordinator does (share first)."""
    h = _hash()
    share_future = ledger.record_share(share(address, worker, difficulty, block_hash=h, is_block=True))
    payload = await ledger.record_block(block(h, address, worker, **kw))  # type: ignore[arg-type]
    await share_future
    return h, payload


def credits(ledger: Ledger, block_hash: str) -> dict[tuple[str, str], tuple[int, str]]:
    rows = ledger.query("SELECT address, worker, amount, status FROM credits WHERE block_hash=?", (block_hash,))
    return {(a, w): (v, s) for a, w, v, s in rows}


@pytest.fixture
def ledger_factory(ledger_target):
    made: list[Ledger] = []

    def make(policy: Policy | None = None, name: str = "ledger.sqlite3", **kw: object) -> Ledger:
        ledger = Ledger(ledger_target(name), policy, **kw)  # type: ignore[arg-type]
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()


@pytest.fixture
def ledger(ledger_factory) -> Ledger:
    return ledger_factory(Policy("pplns", 100, 2.0))


# ---- writes ---------------------------------------------------------------------------------------------------


async def test_record_share_futures_resolve_to_ids_after_commit(ledger: Ledger):
    futures = [ledger.record_share(share(A if i % 2 else B, difficulty=0.5)) for i in range(50)]
    ids = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert ids == list(range(1, 51))
    # Committed: a separate connection sees every row.
    conn = ledger.connect()
    try:
        assert conn.execute("SELECT COUNT(*), SUM(difficulty) FROM shares").fetchone() == (50, 25.0)
    finally:
        conn.close()


async def test_group_commit_batches_concurrent_shares(ledger_factory):
    ledger = ledger_factory(Policy(), max_wait=0.05)
    sizes: list[int] = []
    ledger.on_commit = lambda size, seconds: sizes.append(size)
    ids = await asyncio.wait_for(asyncio.gather(*(ledger.record_share(share(A)) for _ in range(300))), 10)
    assert sorted(ids) == list(range(1, 301))
    assert sum(sizes) == 300 and max(sizes) > 1 and len(sizes) < 300


async def test_failing_op_in_batch_does_not_break_the_others(ledger_factory):
    ledger = ledger_factory(Policy(), max_wait=0.2)
    sizes: list[int] = []
    ledger.on_commit = lambda size, seconds: sizes.append(size)

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height,"
                     " block_hash) VALUES (0, 'ghost', '', 1, 1, 'x', 0, 'ghost')")
        raise ValueError("op failed")

    def bad_sql(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    first = ledger.record_share(share(A))
    failing = ledger.submit(boom)
    middle = ledger.record_share(share(B))
    failing_sql = ledger.submit(bad_sql)
    last = ledger.record_share(share(C))
    done = await asyncio.wait_for(asyncio.gather(first, failing, middle, failing_sql, last,
                                                 return_exceptions=True), 10)
    assert sizes == [5], "the five ops should have shared one transaction"
    assert isinstance(done[1], ValueError)
    assert isinstance(done[3], ledger.errors)  # the driver's own error (sqlite3 / psycopg)
    ids = [done[0], done[2], done[4]]
    # PostgreSQL never hands a sequence value back: ids of a rolled-back attempt leave a gap there.
    assert ids == [1, 2, 3] if ledger.url is None else ids == sorted(set(ids))
    rows = ledger.query("SELECT address FROM shares ORDER BY id")
    assert rows == [(A,), (B,), (C,)]  # the failed op's own insert was rolled back alone
    # The writer keeps working afterwards.
    assert await asyncio.wait_for(ledger.record_share(share(A)), 5) == ids[-1] + 1


@pytest.mark.parametrize("scheme", ["pplns", "pps"])
async def test_batched_share_runs_write_what_one_by_one_writes(ledger_factory, scheme: str):
    """The writer writes a run of consecutive shares in one statement (SQLite: ``book.insert_share_run``;
    PostgreSQL: prefetched and pipelined); ids, running totals and PPS credits must be exactly those of the
    shares inserted one at a time, including around a block, a front-end batch and a failing share."""
    policy = Policy(scheme, 150, 2.0)
    batched = ledger_factory(policy, name="batched.sqlite3", max_wait=0.2)
    single = ledger_factory(policy, name="single.sqlite3")
    sizes: list[int] = []
    batched.on_commit = lambda size, seconds: sizes.append(size)
    workers = [(A, "w1"), (A, "w2"), (B, "w"), (C, "rig")]
    records = [share(*workers[i % 4], difficulty=[1.0, 0.5, 3.25, 1e-3][i % 3], network_difficulty=1000.0,
                     subsidy=50 * COIN, expected_fees=COIN) for i in range(150)]
    bad = dataclasses.replace(records[0], difficulty=0.0)
    h = _hash()
    futures = [batched.record_share(s) for s in records[:60]]
    futures.append(batched.record_block(block(h, A, "w1")))
    futures.append(batched.record_share(bad))
    futures.append(batched.record_shares(records[60:100]))
    futures += [batched.record_share(s) for s in records[100:]]
    done = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20)
    assert isinstance(done[61], ValueError)
    assert not [d for i, d in enumerate(done) if i != 61 and isinstance(d, BaseException)]
    assert max(sizes) > 50, "the shares should have shared transactions"

    for s in records[:60]:
        single.run_sync(lambda c, s=s: book.insert_share(c, policy, s, s.network_difficulty, s.subsidy,
                                                         s.expected_fees))
    single.run_sync(lambda c: book.insert_block(c, policy, block(h, A, "w1")))
    for s in records[60:]:
        single.run_sync(lambda c, s=s: book.insert_share(c, policy, s, s.network_difficulty, s.subsidy,
                                                         s.expected_fees))

    def table(ledger: Ledger, sql: str) -> list[tuple[object, ...]]:
        """Rows with share ids as ranks: PostgreSQL never hands back sequence values of a rolled-back try."""
        rank = {sid: i for i, (sid,) in enumerate(ledger.query("SELECT id FROM shares ORDER BY id"))}
        return [(rank.get(row[0]), *(bytes(v) if isinstance(v, memoryview) else v for v in row[1:]))
                for row in ledger.query(sql)]

    shares_sql = "SELECT id, address, worker, difficulty, is_block, cum, wcum FROM shares ORDER BY id"
    credits_sql = ("SELECT share_id, block_hash, address, worker, amount, kind, status, share_difficulty,"
                   " network_difficulty FROM credits ORDER BY share_id, block_hash, address, worker")
    assert table(batched, shares_sql) == table(single, shares_sql)
    assert table(batched, credits_sql) == table(single, credits_sql)
    assert len(table(batched, shares_sql)) == 150
    if batched.url is None:
        assert done[:60] == list(range(1, 61))


async def test_run_sync_rolls_back_on_error(ledger: Ledger):
    def op(conn: sqlite3.Connection) -> None:
        book.audit(conn, "test", {"x": 1})
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        ledger.run_sync(op)
    assert ledger.audit_entries() == []
    ledger.run_sync(lambda c: book.audit(c, "test", {"x": 2}))
    assert [e.kind for e in ledger.audit_entries()] == ["test"]


async def test_submit_after_close_fails(ledger: Ledger):
    ledger.close()
    with pytest.raises(RuntimeError):
        await ledger.record_share(share(A))


# ---- PPLNS block lifecycle ------------------------------------------------------------------------------------


async def test_pplns_block_credits_pending_then_follow_block_status(ledger: Ledger):
    # A: 3 shares for every share of B, same difficulty; the window (2 × 10 = 20) holds the last 20 shares.
    for i in range(40):
        await ledger.record_share(share(B if i % 4 == 3 else A, difficulty=1.0))
    h, payload = await find_block(ledger, A, difficulty=1.0)
    reward = 50 * COIN
    fee_bp = 100
    got = credits(ledger, h)
    assert {k: s for k, (_, s) in got.items()} == {(A, "w"): "pending", (B, "w"): "pending"}
    total = sum(v for v, _ in got.values())
    row = ledger.query("SELECT fee, status, last_share_id, reward FROM blocks WHERE block_hash=?", (h,))[0]
    assert row[1] == "pending" and row[2] == 41 and total + row[0] == reward == row[3]
    # Last 20 shares: ids 22..41 → B has ids 24,28,32,36,40 = 5 shares, A 15.
    distributable = reward - reward * fee_bp // 10_000
    assert got[(A, "w")][0] == distributable * 15 // 20
    assert got[(B, "w")][0] == distributable * 5 // 20
    assert payload["credits"] == [[A, "w", got[(A, "w")][0]], [B, "w", got[(B, "w")][0]]]
    assert (payload["first_share_id"], payload["last_share_id"]) == (22, 41)
    # Independent recomputation from the shares table agrees.
    fee, recomputed = recompute_pplns(ledger.target, fee_bp, 2.0)[h]
    assert recomputed == {k: v for k, (v, _) in got.items()} and fee == row[0]
    assert book_balances(ledger) == {}

    # pending → confirmed: payable.
    assert await ledger.set_block_status(h, "confirmed", 101) is True
    assert {s for _, s in credits(ledger, h).values()} == {"payable"}
    assert book_balances(ledger) == {A: got[(A, "w")][0], B: got[(B, "w")][0]}
    # Same status again: no change, no audit entry, confirmations updated.
    entries = len(ledger.audit_entries())
    assert await ledger.set_block_status(h, "confirmed", 150) is False
    assert len(ledger.audit_entries()) == entries
    assert ledger.query("SELECT confirmations FROM blocks WHERE block_hash=?", (h,)) == [(150,)]
    # confirmed → orphaned: void, balance excludes them.
    assert await ledger.set_block_status(h, "orphaned", -1) is True
    assert {s for _, s in credits(ledger, h).values()} == {"void"}
    assert book_balances(ledger) == {}
    # orphaned → confirmed again (back in the main chain): payable again.
    assert await ledger.set_block_status(h, "confirmed", 120) is True
    assert {s for _, s in credits(ledger, h).values()} == {"payable"}
    # orphaned → pending path too.
    await ledger.set_block_status(h, "orphaned", -1)
    assert await ledger.set_block_status(h, "pending", 3) is True
    assert {s for _, s in credits(ledger, h).values()} == {"pending"}
    kinds = [(e.kind, json.loads(e.payload).get("to")) for e in ledger.audit_entries()]
    assert kinds == [("block_found", None), ("block_status", "confirmed"), ("block_status", "orphaned"),
                     ("block_status", "confirmed"), ("block_status", "orphaned"), ("block_status", "pending")]
    # Unknown block: nothing happens.
    assert await ledger.set_block_status("ff" * 32, "confirmed", 1) is False


async def test_rejected_block_voids_credits(ledger: Ledger):
    await ledger.record_share(share(B))
    h, _ = await find_block(ledger, A)
    await ledger.set_block_status(h, "rejected")
    assert {s for _, s in credits(ledger, h).values()} == {"void"}


async def test_duplicate_block_is_recorded_once(ledger: Ledger):
    h, _ = await find_block(ledger, A)
    again = await ledger.record_block(block(h, A))
    assert again == {"duplicate": True}
    assert len(credits(ledger, h)) == 1
    assert ledger.query("SELECT COUNT(*) FROM blocks") == [(1,)]
    assert [e.kind for e in ledger.audit_entries()] == ["block_found"]


async def test_pplns_window_partial_oldest_share(ledger_factory):
    ledger = ledger_factory(Policy("pplns", 0, 1.0))
    await ledger.record_share(share(B, difficulty=4.0))  # oldest, straddles the window edge
    await ledger.record_share(share(A, difficulty=1.0))
    h, payload = await find_block(ledger, A, difficulty=1.0, reward=1000, network_difficulty=3.0)
    # N = 3: A's two shares (2) + 1 of B's 4.
    got = credits(ledger, h)
    assert got[(A, "w")][0] == 666 and got[(B, "w")][0] == 333
    assert payload["fee"] == 1 and payload["window_difficulty"] == "3"
    assert payload["first_share_id"] == 1 and payload["last_share_id"] == 3


async def test_pplns_block_with_window_spanning_earlier_blocks(ledger: Ledger):
    for i in range(6):
        await ledger.record_share(share(A if i % 2 else B, difficulty=2.0))
    h1, _ = await find_block(ledger, A, difficulty=2.0, network_difficulty=5.0)
    for _ in range(3):
        await ledger.record_share(share(C, difficulty=2.0))
    h2, _ = await find_block(ledger, B, difficulty=2.0, network_difficulty=5.0)
    recomputed = recompute_pplns(ledger.target, 100, 2.0)
    for h in (h1, h2):
        fee, split = recomputed[h]
        assert {k: v for k, (v, _) in credits(ledger, h).items()} == split
        assert ledger.query("SELECT fee FROM blocks WHERE block_hash=?", (h,)) == [(fee,)]


# ---- other schemes --------------------------------------------------------------------------------------------


async def test_pps_credits_each_share_at_once(ledger_factory):
    ledger = ledger_factory(Policy("pps", 200, 2.0))
    nd, subsidy = 1000.0, 50 * COIN
    ids = [await ledger.record_share(share(A, difficulty=d, network_difficulty=nd, subsidy=subsidy,
                                           expected_fees=COIN)) for d in (1.0, 2.5, 0.001)]
    rows = ledger.query("SELECT share_id, address, amount, kind, status, block_hash FROM credits ORDER BY share_id")
    assert rows == [(sid, A, pps_value(d, nd, subsidy, 200), "pps", "payable", None)
                    for sid, d in zip(ids, (1.0, 2.5, 0.001), strict=True)]
    assert book_balances(ledger) == {A: sum(r[2] for r in rows)}
    # A block found under PPS belongs to the pool; its orphaning does not touch the share credits.
    h, payload = await find_block(ledger, A, network_difficulty=nd)
    assert payload["credits"] == [] and payload["fee"] == 50 * COIN
    assert credits(ledger, h) == {}
    await ledger.set_block_status(h, "orphaned", -1)
    assert book_balances(ledger)[A] == sum(r[2] for r in rows)
    # No network difficulty known: no credit rather than a division by zero.
    await ledger.record_share(share(B, network_difficulty=0.0, subsidy=subsidy))
    assert ledger.query("SELECT COUNT(*) FROM credits WHERE address=?", (B,)) == [(0,)]


async def test_fpps_includes_expected_fees(ledger_factory):
    ledger = ledger_factory(Policy("fpps", 100, 2.0))
    sid = await ledger.record_share(share(A, difficulty=1.0, network_difficulty=4.0, subsidy=50 * COIN,
                                          expected_fees=2 * COIN))
    assert ledger.query("SELECT amount, kind FROM credits WHERE share_id=?", (sid,)) == [
        (pps_value(1.0, 4.0, 50 * COIN, 100, 2 * COIN), "fpps")]


async def test_solo_credit_is_onchain(ledger_factory):
    ledger = ledger_factory(Policy("solo", 150, 2.0))
    await ledger.record_share(share(B))
    h, payload = await find_block(ledger, A, "rig", reward=50 * COIN + 777)
    fee = (50 * COIN + 777) * 150 // 10_000
    assert credits(ledger, h) == {(A, "rig"): (50 * COIN + 777 - fee, "onchain")}
    assert payload["fee"] == fee and payload["scheme"] == "solo"
    # Paid in the coinbase: never part of a wallet balance, even when confirmed.
    await ledger.set_block_status(h, "confirmed", 101)
    assert book_balances(ledger) == {}


async def test_orphaned_solo_block_credit_is_not_reported_as_paid(ledger_factory):
    ledger = ledger_factory(Policy("solo", 100, 2.0))
    h, _ = await find_block(ledger, A, "rig")
    await ledger.set_block_status(h, "orphaned", -1)
    assert {s for _, s in credits(ledger, h).values()} == {"void"}


# ---- balances and payments ------------------------------------------------------------------------------------


def book_balances(ledger: Ledger) -> dict[str, int]:
    return {a: v for a, v in ledger.run_sync(book.balances).items() if v}


async def test_balances_and_payments(ledger_factory):
    ledger = ledger_factory(Policy("pplns", 0, 100.0))
    for i in range(8):
        await ledger.record_share(share(B if i % 4 == 0 else A))
    await ledger.record_share(share(C, difficulty=0.001))
    h, _ = await find_block(ledger, A, reward=10_000_000, network_difficulty=1.0)
    await ledger.set_block_status(h, "confirmed", 101)
    bal = book_balances(ledger)
    assert sum(bal.values()) == 10_000_000 - ledger.query("SELECT fee FROM blocks")[0][0]
    small = bal[C]
    assert 0 < small < 100_000

    due = ledger.run_sync(lambda c: book.create_payments(c, "batch1", 100_000))
    assert due == sorted((a, v) for a, v in bal.items() if v >= 100_000)
    assert C not in dict(due)
    # 'sending' already counts as paid: a second round right away creates nothing for the same addresses.
    assert book_balances(ledger) == {C: small}
    assert ledger.run_sync(lambda c: book.create_payments(c, "batch2", 100_000)) == []
    rows = ledger.query("SELECT batch, address, amount, status, txid FROM payments ORDER BY address")
    assert rows == [("batch1", a, v, "sending", None) for a, v in due]

    ledger.run_sync(lambda c: book.finish_payments(c, "batch1", "sent", "ab" * 32))
    assert {r[0] for r in ledger.query("SELECT status FROM payments")} == {"sent"}
    assert book_balances(ledger) == {C: small}

    # A failed batch gives the balance back.
    for _ in range(3):
        await ledger.record_share(share(C, difficulty=1.0))
    h2, _ = await find_block(ledger, C, reward=1_000_000, network_difficulty=1.0)
    await ledger.set_block_status(h2, "confirmed", 101)
    before = book_balances(ledger)
    due3 = ledger.run_sync(lambda c: book.create_payments(c, "batch3", 100_000))
    assert (C, before[C]) in due3 and due3 == sorted(before.items())
    assert book_balances(ledger) == {}
    ledger.run_sync(lambda c: book.finish_payments(c, "batch3", "failed", None))
    assert book_balances(ledger) == before
    assert ledger.query("SELECT DISTINCT status FROM payments WHERE batch='batch1'") == [("sent",)]

    # A block orphaned after its credits were paid leaves a negative balance.
    await ledger.set_block_status(h, "orphaned", -1)
    assert book_balances(ledger)[A] < 0
    kinds = [e.kind for e in ledger.audit_entries()]
    assert kinds.count("payment_created") == 2 and "payment_sent" in kinds and "payment_failed" in kinds


async def test_threshold_is_inclusive(ledger_factory):
    ledger = ledger_factory(Policy("pplns", 0, 1.0))
    h, _ = await find_block(ledger, A, reward=5000, network_difficulty=1.0)
    await ledger.set_block_status(h, "confirmed", 101)
    assert ledger.run_sync(lambda c: book.create_payments(c, "b", 5001)) == []
    assert ledger.run_sync(lambda c: book.create_payments(c, "b", 5000)) == [(A, 5000)]


# ---- reports and CLI ------------------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pool", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd or ROOT)


async def _populated(ledger: Ledger) -> dict[str, str]:
    for i in range(12):
        await ledger.record_share(share(B if i % 4 == 0 else A, "w1" if i % 3 else "w2", difficulty=0.5))
    h1, _ = await find_block(ledger, A, "w1", difficulty=0.5, network_difficulty=2.0, height=101)
    h2, _ = await find_block(ledger, B, "", difficulty=0.5, network_difficulty=2.0, height=102)
    h3, _ = await find_block(ledger, A, "w2", difficulty=0.5, network_difficulty=2.0, height=103)
    await ledger.set_block_status(h1, "confirmed", 101)
    await ledger.set_block_status(h2, "orphaned", -1)
    ledger.run_sync(lambda c: book.create_payments(c, "b1", 1000))
    ledger.run_sync(lambda c: book.finish_payments(c, "b1", "sent", "cd" * 32))
    return {"confirmed": h1, "orphaned": h2, "pending": h3}


async def test_report_cli_json_matches_ledger(ledger: Ledger, tmp_path: Path):
    hashes = await _populated(ledger)
    path = str(ledger.path) if ledger.url is None else ledger.url  # trusted local role: no password needed

    res = run_cli("workers", "--ledger", path, "--json")
    assert res.returncode == 0, res.stderr
    workers = json.loads(res.stdout)
    want = ledger.query("SELECT address, worker, COUNT(*), SUM(difficulty) FROM shares GROUP BY address, worker"
                        " ORDER BY address, worker")
    assert [(w["address"], w["worker"], w["shares"]) for w in workers] == [r[:3] for r in want]
    for w, r in zip(workers, want, strict=True):
        assert w["difficulty"] == pytest.approx(r[3])
        assert w["credited_sats"] == (ledger.query(
            "SELECT COALESCE(SUM(amount), 0) FROM credits WHERE address=? AND worker=? AND status='payable'",
            (r[0], r[1]))[0][0])
        assert w["pending_sats"] == (ledger.query(
            "SELECT COALESCE(SUM(amount), 0) FROM credits WHERE address=? AND worker=? AND status='pending'",
            (r[0], r[1]))[0][0])
        assert w["blocks"] == ledger.query("SELECT COUNT(*) FROM blocks WHERE address=? AND worker=?",
                                           (r[0], r[1]))[0][0]

    res = run_cli("blocks", "--ledger", path, "--json")
    assert res.returncode == 0, res.stderr
    blocks = json.loads(res.stdout)
    assert [b["height"] for b in blocks] == [103, 102, 101]
    by_hash = {b["hash"]: b for b in blocks}
    for status, h in hashes.items():
        assert by_hash[h]["status"] == status
    assert by_hash[hashes["orphaned"]]["finder"] == B
    assert by_hash[hashes["confirmed"]]["finder"] == f"{A}.w1"
    for b in blocks:
        reward, fee = ledger.query("SELECT reward, fee FROM blocks WHERE block_hash=?", (b["hash"],))[0]
        assert (b["reward_sats"], b["fee_sats"], b["scheme"]) == (reward, fee, "pplns")

    res = run_cli("payouts", "--ledger", path, "--json")
    assert res.returncode == 0, res.stderr
    payouts = {p["address"]: p for p in json.loads(res.stdout)}
    balances = ledger.run_sync(book.balances)
    assert set(payouts) == {A, B}
    for address, p in payouts.items():
        paid = ledger.query("SELECT COALESCE(SUM(amount), 0) FROM payments WHERE address=? AND status='sent'",
                            (address,))[0][0]
        payable = ledger.query("SELECT COALESCE(SUM(amount), 0) FROM credits WHERE address=? AND status='payable'",
                               (address,))[0][0]
        pending = ledger.query("SELECT COALESCE(SUM(amount), 0) FROM credits WHERE address=? AND status='pending'",
                               (address,))[0][0]
        assert (p["credited_sats"], p["paid_sats"], p["pending_sats"]) == (payable, paid, pending)
        assert p["balance_sats"] == balances.get(address, 0) == payable - paid
        assert p["sending_sats"] == 0

    res = run_cli("payouts", "--by", "worker", "--ledger", path, "--json")
    assert res.returncode == 0, res.stderr
    per_worker = json.loads(res.stdout)
    void = sum(p["void_sats"] for p in per_worker)
    assert void == ledger.query("SELECT SUM(amount) FROM credits WHERE status='void'")[0][0] > 0
    assert sum(p["payable_sats"] + p["pending_sats"] + p["void_sats"] for p in per_worker) == ledger.query(
        "SELECT SUM(amount) FROM credits")[0][0]

    # Plain-text rendering works too.
    res = run_cli("blocks", "--ledger", path)
    assert res.returncode == 0 and hashes["pending"] in res.stdout


async def test_cli_finds_ledger_via_config_and_data_dir(ledger_factory, ledger_backend, tmp_path: Path):
    if ledger_backend != "sqlite":
        pytest.skip("finding a SQLite file by data dir and [ledger] path (the PostgreSQL URL: test_ledger_pg)")
    data = tmp_path / "data"
    ledger = ledger_factory(Policy(), name="data/ledger.sqlite3")
    assert ledger.path == data / "ledger.sqlite3"
    await find_block(ledger, A)
    res = run_cli("blocks", "--data-dir", str(data), "--json")
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)) == 1

    cfg = tmp_path / "pool.toml"
    cfg.write_text(
        'data_dir = "{d}"\n[node]\nnetwork = "regtest"\nrpc_url = "http://127.0.0.1:1"\n'
        '[payout]\nscheme = "solo"\n[ledger]\npath = "{p}"\n'.format(d=tmp_path / "elsewhere", p=ledger.path))
    res = run_cli("payouts", "--config", str(cfg), "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)[0]["address"] == A
    res = run_cli("audit", "verify", "--config", str(cfg))
    assert res.returncode == 0, res.stdout + res.stderr

    res = run_cli("blocks", "--ledger", str(tmp_path / "missing.sqlite3"))
    assert res.returncode == 1 and "no ledger" in res.stderr


async def test_workers_report_keeps_tiny_difficulties(ledger: Ledger):
    from pool import reports

    for _ in range(3):
        await ledger.record_share(share(A, difficulty=1e-11))
    (row,) = reports.workers(ledger.target)[1]
    assert row[2] == 3
    assert row[3] == pytest.approx(3e-11)


async def test_record_shares_writes_a_front_end_batch_as_one_operation(ledger: Ledger):
    """A front-end process's run of shares: one operation, one answer, every row written (or none)."""
    batch = [share("addr1", f"w{i}", difficulty=float(i + 1), network_difficulty=7.0) for i in range(5)]
    await ledger.record_shares(batch)
    rows = ledger.query("SELECT worker, difficulty FROM shares ORDER BY id")
    assert rows == [(f"w{i}", float(i + 1)) for i in range(5)]
    assert ledger.network_difficulty == 7.0  # the roll-up's window follows the newest share, as record_share
