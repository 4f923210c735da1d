"""Best share difficulty: the in-memory records (per worker, per round, pool-wide) and their ledger rows."""

from __future__ import annotations

import sqlite3

from pool.ledger import best as best_sql
from pool.ledger.sqlite import Ledger
from pool.mining.best import BestShares


def test_only_a_raised_record_is_returned() -> None:
    bests = BestShares()
    first = bests.offer("addr", "rig", 10.0, 100.0)
    assert first is not None and (first.best, first.round_best, first.round_no) == (10.0, 10.0, 0)
    assert bests.offer("addr", "rig", 5.0, 101.0) is None
    assert bests.offer("addr", "rig", 10.0, 102.0) is None  # equal is no record
    raised = bests.offer("addr", "rig", 50.0, 103.0)
    assert raised is not None and (raised.best, raised.best_at) == (50.0, 103.0)
    raised.best = 0.0  # the returned record is a copy (handed to the ledger thread)
    assert bests.for_worker("addr", "rig").best == 50.0  # type: ignore[union-attr]


def test_a_new_round_starts_every_round_best_from_zero() -> None:
    bests = BestShares()
    bests.offer("a", "1", 50.0, 1.0)
    bests.offer("b", "1", 20.0, 2.0)
    assert bests.pool_round is not None and bests.pool_round.address == "a"
    bests.new_round()
    assert bests.pool_round is None and bests.round_no == 1
    assert bests.pool_all_time is not None and bests.pool_all_time.difficulty == 50.0
    record = bests.offer("a", "1", 3.0, 3.0)  # below the all-time best, but the round's first
    assert record is not None and (record.best, record.round_best, record.round_no) == (50.0, 3.0, 1)
    assert bests.pool_round is not None and (bests.pool_round.difficulty, bests.pool_round.address) == (3.0, "a")
    bests.offer("b", "1", 7.0, 4.0)
    assert bests.pool_round.difficulty == 7.0 and bests.pool_round.address == "b"  # type: ignore[union-attr]
    assert bests.pool_all_time.difficulty == 50.0


def test_load_keeps_round_bests_of_the_current_round_only() -> None:
    bests = BestShares()
    bests.load([("a", "1", 90.0, 1.0, 2, 40.0, 5.0), ("b", "x", 60.0, 2.0, 3, 60.0, 6.0)], round_no=3)
    assert bests.pool_all_time is not None and bests.pool_all_time.difficulty == 90.0
    assert bests.pool_round is not None and (bests.pool_round.address, bests.pool_round.difficulty) == ("b", 60.0)
    record = bests.offer("a", "1", 1.0, 7.0)  # a's round best was of round 2: any share is a record now
    assert record is not None and (record.round_no, record.round_best, record.best) == (3, 1.0, 90.0)


def test_worker_count_is_bounded() -> None:
    bests = BestShares(max_workers=2)
    for i in range(5):
        bests.offer("a", str(i), float(i + 1), 0.0)
    assert len(bests.workers) == 2 and bests.pool_all_time.difficulty == 5.0  # type: ignore[union-attr]


def _conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.executescript(best_sql.SCHEMA)
    conn.execute("CREATE TABLE blocks (block_hash TEXT PRIMARY KEY)")
    return conn


def test_upsert_never_lowers_a_record_whatever_the_order() -> None:
    conn = _conn()
    best_sql.upsert(conn, [("a", "1", 50.0, 10.0, 0, 50.0, 10.0)])
    best_sql.upsert(conn, [("a", "1", 20.0, 11.0, 0, 20.0, 11.0)])  # a stale (lower) write arriving late
    assert best_sql.load(conn) == ([("a", "1", 50.0, 10.0, 0, 50.0, 10.0)], 0)
    best_sql.upsert(conn, [("a", "1", 50.0, 10.0, 1, 4.0, 12.0)])  # round 1 starts: its best replaces round 0's
    assert best_sql.load(conn)[0] == [("a", "1", 50.0, 10.0, 1, 4.0, 12.0)]
    best_sql.upsert(conn, [("a", "1", 50.0, 10.0, 0, 45.0, 9.0)])  # a write of the older round changes nothing
    assert best_sql.load(conn)[0] == [("a", "1", 50.0, 10.0, 1, 4.0, 12.0)]
    best_sql.upsert(conn, [("a", "1", 80.0, 13.0, 1, 80.0, 13.0)])
    assert best_sql.load(conn)[0] == [("a", "1", 80.0, 13.0, 1, 80.0, 13.0)]


def test_round_number_is_the_count_of_found_blocks_and_old_round_bests_read_as_zero() -> None:
    conn = _conn()
    best_sql.upsert(conn, [("a", "1", 9.0, 1.0, 0, 9.0, 1.0), ("a", "2", 3.0, 2.0, 1, 3.0, 2.0)])
    conn.execute("INSERT INTO blocks VALUES ('h1')")
    assert best_sql.current_round(conn) == 1
    by_worker = {r["worker"]: r for r in best_sql.for_address(conn, "a")}
    assert by_worker["1"]["best"] == 9.0 and by_worker["1"]["round_best"] == 0.0
    assert by_worker["1"]["round_best_at"] is None
    assert by_worker["2"]["round_best"] == 3.0
    assert best_sql.for_address(conn, "nobody") == []


def test_the_ledger_creates_the_table_and_reads_it_back(ledger_target) -> None:  # noqa: ANN001 - both backends
    ledger = Ledger(ledger_target(), rollup_interval=0)
    try:
        ledger.run_sync(lambda c: best_sql.upsert(c, [("a", "w", 12.5, 3.0, 0, 12.5, 3.0)]))
        assert ledger.best_shares() == ([("a", "w", 12.5, 3.0, 0, 12.5, 3.0)], 0)
        assert ledger.best_for_address("a")[0]["best"] == 12.5
    finally:
        ledger.close()
