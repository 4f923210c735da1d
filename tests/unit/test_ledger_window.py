"""PPLNS from running totals (pool.ledger.window) and the share roll-up (pool.ledger.rollup): the split is the
same, to the satoshi, as ``accounting.pplns_split`` over every share newest first; the work per block does
not grow with the history; old rows are rolled up without changing a report or the current window; a ledger
file from before the running totals is migrated when opened."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from pool import reports
from pool.ledger import book, pg, rollup, window
from pool.ledger.accounting import WindowShare, pplns_split
from pool.ledger.book import Policy
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord

COIN = 100_000_000
ADDRESSES = ["bcrt1qaaa", "bcrt1qbbb", "bcrt1qccc"]
WORKERS = ["", "w1", "rig-2"]
DIFFICULTIES = [1e-11, 0.1, 0.5, 1.0, 3.0, 1024.0, 1e-3, 7.25]


def memory_ledger() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(book.SCHEMA)
    return conn


@pytest.fixture
def new_conn(ledger_target):
    """``make()`` -> an open connection to a new, empty ledger on the test's backend (SQLite in memory, or a
    new PostgreSQL database with the pool's schema)."""
    made: list = []

    def make():  # noqa: ANN202
        if ledger_target.is_pg:
            url = ledger_target()
            Ledger(url, rollup_interval=0).close()
            conn = pg.connect(str(url))
        else:
            conn = memory_ledger()
        made.append(conn)
        return conn

    yield make
    for conn in made:
        conn.close()


def add_share(conn: sqlite3.Connection, address: str, worker: str, difficulty: float, ts: float | None = None,
              policy: Policy | None = None, network_difficulty: float = 0.0) -> int:
    s = SimpleNamespace(ts=time.time() if ts is None else ts, address=address, worker=worker,
                        difficulty=difficulty, share_difficulty=difficulty, job_id="1", height=101,
                        block_hash=f"{random.getrandbits(256):064x}", is_block=False)
    return book.insert_share(conn, policy or Policy(), s, network_difficulty, 50 * COIN, 0)


def random_history(conn: sqlite3.Connection, rng: random.Random, n: int) -> None:
    for _ in range(n):
        add_share(conn, rng.choice(ADDRESSES), rng.choice(WORKERS), rng.choice(DIFFICULTIES) * rng.choice([1, 1, 3]))


def full_scan_split(conn: sqlite3.Connection, reward: int, fee_bp: int, last_id: int, nd: float, factor: float):
    """The split as the ledger computed it before running totals: every share up to ``last_id``, newest first."""
    rows = conn.execute("SELECT id, address, worker, difficulty FROM shares WHERE id <= ? ORDER BY id DESC",
                        (last_id,))
    return pplns_split(reward, fee_bp, (WindowShare(*r) for r in rows), nd, factor)


@pytest.mark.parametrize("seed", range(12))
def test_split_from_totals_equals_full_scan_on_random_histories(seed: int, new_conn):
    rng = random.Random(seed)
    conn = new_conn()
    random_history(conn, rng, rng.randint(1, 400))
    last = conn.execute("SELECT MAX(id) FROM shares").fetchone()[0]
    total = sum(d for (d,) in conn.execute("SELECT difficulty FROM shares"))
    for _ in range(25):
        end = rng.randint(1, last)
        # Windows from a sliver of one share to more than the whole history.
        nd = rng.choice([1e-12, 0.3, 1.0, 10.0, total / 3, total, total * 5, 4.656542373906925e-10])
        factor = rng.choice([0.5, 1.0, 2.0, 3.7])
        reward = rng.choice([50 * COIN + rng.randint(0, 10**6), 1000, 1])
        fee_bp = rng.choice([0, 100, 250, 10_000])
        want = full_scan_split(conn, reward, fee_bp, end, nd, factor)
        for limit in (0, 10**9):  # aggregated per worker, and row by row
            got = window.pplns_split_from_totals(conn, reward, fee_bp, end, nd, factor, direct_limit=limit)
            assert got == want, (seed, end, nd, factor, limit)


def test_split_after_rollup_equals_full_scan_over_the_rows_kept(new_conn):
    """Rows are only ever removed from the old end, so the totals of what is kept still add up; a window
    reaching past the kept rows takes all of them (as the full scan over those rows does)."""
    rng = random.Random(99)
    conn = new_conn()
    random_history(conn, rng, 300)
    conn.execute("BEGIN")
    assert rollup.rollup_batch(conn, below=120, batch=1000) == 119
    conn.execute("COMMIT")
    last = conn.execute("SELECT MAX(id) FROM shares").fetchone()[0]
    for nd in (0.5, 5.0, 50.0, 1e6):
        for limit in (0, 10**9):
            got = window.pplns_split_from_totals(conn, 10**8, 100, last, nd, 2.0, direct_limit=limit)
            assert got == full_scan_split(conn, 10**8, 100, last, nd, 2.0)


def test_block_work_does_not_grow_with_history():
    """A window longer than the whole history (a pool below ~100 PH/s on mainnet) once made every block walk
    every share. Counted in SQLite virtual-machine steps, not time: the same block costs about the same with
    2,000 or 40,000 shares behind it."""

    def steps_for_block(n: int) -> int:
        conn = memory_ledger()
        rng = random.Random(n)
        random_history(conn, rng, n)
        counter = [0]
        conn.set_progress_handler(lambda: counter.__setitem__(0, counter[0] + 1) or 0, 100)
        block = BlockRecord(f"{n:064x}", 101, ADDRESSES[0], "", 50 * COIN, 50 * COIN, 1e12, time.time())
        payload = book.insert_block(conn, Policy("pplns", 100, 2.0), block)
        conn.set_progress_handler(None, 0)
        assert payload["first_share_id"] == 1 and payload["last_share_id"] == n  # every share is in the window
        return counter[0]

    small, large = steps_for_block(2_000), steps_for_block(40_000)
    assert large < 2 * small + 50, (small, large)


def test_share_with_a_non_positive_difficulty_is_refused(new_conn):
    conn = new_conn()
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="difficulty"):
            add_share(conn, ADDRESSES[0], "", bad)
    assert conn.execute("SELECT COUNT(*) FROM shares").fetchone() == (0,)


# ---- roll-up ----------------------------------------------------------------------------------------------


def test_rollup_keeps_the_current_window_and_recent_rows(new_conn):
    conn = new_conn()
    now = 1_700_000_000.0
    for i in range(100):  # one share of difficulty 1 a minute, the newest at `now`
        add_share(conn, ADDRESSES[i % 2], "w", 1.0, ts=now - (99 - i) * 60)
    # Window N = 2 × 10 = 20 shares: ids 81..100; keep 1 hour: ids 40..100. The tighter bound wins.
    assert rollup.cutoff(conn, "pplns", 2.0, 10.0, 3600, now, margin=1) == 40
    assert rollup.cutoff(conn, "pplns", 2.0, 40.0, 3600, now, margin=1) == 21  # a longer window keeps more
    # By default 4 windows are kept, for a difficulty rise before the next block: 80 shares, ids 21..100.
    assert rollup.cutoff(conn, "pplns", 2.0, 10.0, 3600, now) == 21
    assert rollup.cutoff(conn, "pplns", 2.0, 0.0, 3600, now) is None  # window unknown: keep everything
    assert rollup.cutoff(conn, "pps", 2.0, 0.0, 3600, now) == 40
    assert rollup.cutoff(conn, "solo", 2.0, 0.0, 0, now + 10**6) == 100  # the newest row always stays
    conn.execute("BEGIN")
    removed = rollup.rollup_batch(conn, 21, batch=7)
    conn.execute("COMMIT")
    assert removed == 7 and conn.execute("SELECT MIN(id) FROM shares").fetchone() == (8,)
    # A closing ledger stops the roll-up between batches (its thread is joined with a time limit).
    assert rollup.prune(conn, "pplns", 2.0, 10.0, 3600, batch=7, now=now, stop=lambda: True) == 0
    calls = []
    assert rollup.prune(conn, "pplns", 2.0, 10.0, 3600, batch=2, now=now, stop=lambda: bool(calls.append(1)) or len(calls) > 2) == 4
    assert rollup.prune(conn, "pplns", 2.0, 10.0, 3600, batch=7, now=now) == 9
    assert conn.execute("SELECT MIN(id), COUNT(*) FROM shares").fetchone() == (21, 80)
    rolled = conn.execute("SELECT SUM(shares), SUM(difficulty), MIN(first_id), MAX(last_id) FROM share_rollup")
    assert rolled.fetchone() == (20, 20.0, 1, 20)


async def test_reports_and_api_totals_are_the_same_after_rollup(ledger_target):
    ledger = Ledger(ledger_target(), Policy("pplns", 100, 2.0), rollup_interval=0, keep_seconds=0)
    try:
        rng = random.Random(5)
        start = time.time() - 5 * 3600
        for i in range(600):  # five hours of shares, three workers on two addresses
            address, worker = rng.choice([(ADDRESSES[0], "a"), (ADDRESSES[0], "b"), (ADDRESSES[1], "")])
            await ledger.record_share(ShareRecord(start + i * 30, address, worker, rng.choice([0.5, 1.0, 2.25]),
                                                  4.0, "1", 101, f"{i:064x}", False))
        h = f"{999:064x}"
        await ledger.record_share(ShareRecord(time.time(), ADDRESSES[1], "", 1.0, 4.0, "1", 101, h, True))
        await ledger.record_block(BlockRecord(h, 101, ADDRESSES[1], "", 50 * COIN, 50 * COIN, 20.0, time.time()))
        await ledger.set_block_status(h, "confirmed", 101)
        before = reports.workers(ledger.target)
        api_before = ledger.share_totals(ADDRESSES[0])
        api_shares_before = address_shares(ledger, ADDRESSES[0])
        assert [(s["worker"], s["count"]) for s in api_shares_before] == [
            (w, n) for w, n in ledger.query("SELECT worker, COUNT(*) FROM shares WHERE address=? GROUP BY worker",
                                            (ADDRESSES[0],))]
        credits_before = ledger.query("SELECT * FROM credits ORDER BY id")

        removed = await asyncio.to_thread(ledger.rollup, 5.0, 50)
        kept = ledger.query("SELECT COUNT(*), MIN(id) FROM shares")[0]
        assert removed == 601 - kept[0] and removed > 500
        # The current window with its margin (4 × 2 × 5 of difficulty) is still there, row by row.
        assert ledger.query("SELECT SUM(difficulty) FROM shares")[0][0] >= 40.0
        assert ledger.query("SELECT COUNT(*) FROM share_rollup")[0][0] >= 5 * 3  # per worker and hour

        assert reports.workers(ledger.target) == before
        assert ledger.share_totals(ADDRESSES[0]) == api_before
        assert address_shares(ledger, ADDRESSES[0]) == api_shares_before
        assert ledger.query("SELECT * FROM credits ORDER BY id") == credits_before
        ok, message = reports.audit_verify(ledger.target)
        assert ok, message
        # Rolling up again removes nothing more: every remaining row is in the window.
        assert await asyncio.to_thread(ledger.rollup, 5.0, 50) == 0
    finally:
        ledger.close()


def address_shares(ledger: Ledger, address: str) -> list[dict[str, object]]:
    """The "shares" part of /api/address, from the app's own view over this ledger."""
    from pool.app import PoolApp
    from pool.config import parse_config

    app = PoolApp(parse_config({"node": {"network": "regtest", "rpc_url": "http://127.0.0.1:1"},
                                "payout": {"scheme": "solo"}}))
    app.ledger = ledger
    return app.address_summary(address, [])["shares"]  # type: ignore[return-value]


async def test_ledger_rolls_up_by_itself_off_the_writer(ledger_target):
    ledger = Ledger(ledger_target(), Policy("pps", 100, 2.0), rollup_interval=0.05, keep_seconds=0)
    try:
        for i in range(30):
            await ledger.record_share(ShareRecord(time.time(), ADDRESSES[0], "w", 1.0, 3.0, "1", 101, f"{i:064x}",
                                                  False, 1000.0, 50 * COIN, 0))
        deadline = time.monotonic() + 10
        while ledger.query("SELECT COUNT(*) FROM shares")[0][0] > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert ledger.query("SELECT COUNT(*) FROM shares") == [(1,)]
        assert ledger.query("SELECT SUM(shares) FROM share_rollup") == [(29,)]
        assert ledger.share_totals()[0][:4] == (ADDRESSES[0], "w", 30, 30.0)
        # The writer goes on: the next share continues the running totals of the newest row.
        assert await ledger.record_share(ShareRecord(time.time(), ADDRESSES[0], "w", 1.0, 3.0, "1", 101, "ff" * 32,
                                                     False)) == 31
    finally:
        ledger.close()


async def test_pps_credit_is_self_contained_after_rollup(ledger_target):
    ledger = Ledger(ledger_target(), Policy("pps", 100, 2.0), rollup_interval=0, keep_seconds=0)
    try:
        for i in range(5):
            await ledger.record_share(ShareRecord(time.time() - 100, ADDRESSES[0], "w", 2.0, 3.0, "1", 101,
                                                  f"{i:064x}", False, 1000.0, 50 * COIN, 0))
        before = ledger.query("SELECT address, worker, amount, share_difficulty, network_difficulty FROM credits")
        assert await asyncio.to_thread(ledger.rollup) == 4  # PPS needs no window: all but the newest row
        after = ledger.query("SELECT address, worker, amount, share_difficulty, network_difficulty FROM credits")
        assert after == before == [(ADDRESSES[0], "w", after[0][2], 2.0, 1000.0)] * 5
    finally:
        ledger.close()


# ---- durability and migration -----------------------------------------------------------------------------


async def test_writer_connection_is_durable(ledger_target):
    """The README's promise (an acknowledged share survives a power cut) rests on these settings of the
    connection the writer commits shares on; a kill -9 test cannot see synchronous=OFF (the OS keeps the data)."""
    target = ledger_target()
    if ledger_target.is_pg:  # even where the database's own default is not durable
        conn = pg.connect(str(target))
        conn.execute(f"ALTER DATABASE {str(target).rsplit('/', 1)[1]} SET synchronous_commit = off")
        conn.close()
    ledger = Ledger(target, rollup_interval=0)
    if ledger.is_pg:
        try:  # COMMIT returns once the WAL is flushed to disk (synchronous_commit on, fsync on)
            settings = await ledger.submit(lambda c: (c.execute("SHOW synchronous_commit").fetchone()[0],
                                                      c.execute("SHOW fsync").fetchone()[0]))
            assert settings == ("on", "on")
        finally:
            ledger.close()
        return
    try:
        settings = await ledger.submit(lambda c: (c.execute("PRAGMA journal_mode").fetchone()[0],
                                                  c.execute("PRAGMA synchronous").fetchone()[0]))
        assert settings == ("wal", 2)  # 2 = FULL: fsync at every commit
        assert ledger.run_sync(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
    finally:
        ledger.close()


OLD_SHARES = """
CREATE TABLE shares (id INTEGER PRIMARY KEY, ts REAL NOT NULL, address TEXT NOT NULL, worker TEXT NOT NULL,
    difficulty REAL NOT NULL, share_difficulty REAL NOT NULL, job_id TEXT NOT NULL, height INTEGER NOT NULL,
    block_hash TEXT NOT NULL, is_block INTEGER NOT NULL DEFAULT 0);
CREATE INDEX shares_address ON shares(address, worker);
CREATE TABLE credits (id INTEGER PRIMARY KEY, block_hash TEXT, share_id INTEGER, address TEXT NOT NULL,
    worker TEXT NOT NULL, amount INTEGER NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE blocks (block_hash TEXT PRIMARY KEY, height INTEGER NOT NULL, address TEXT NOT NULL,
    worker TEXT NOT NULL, reward INTEGER NOT NULL, subsidy INTEGER NOT NULL DEFAULT 0,
    network_difficulty REAL NOT NULL DEFAULT 0, scheme TEXT NOT NULL DEFAULT 'pplns', fee INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL, confirmations INTEGER NOT NULL DEFAULT 0, found_at REAL NOT NULL,
    updated_at REAL NOT NULL, last_share_id INTEGER);
"""


async def test_ledger_from_before_running_totals_is_migrated_on_open(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_SHARES)
    rng = random.Random(3)
    rows = [(time.time(), rng.choice(ADDRESSES), rng.choice(WORKERS), rng.choice(DIFFICULTIES), 1.0, "1", 101,
             f"{i:064x}") for i in range(1, 2501)]
    conn.executemany("INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height,"
                     " block_hash) VALUES (?,?,?,?,?,?,?,?)", rows)
    conn.execute("INSERT INTO credits (share_id, address, worker, amount, kind, status, created_at)"
                 " VALUES (7, 'x', 'w', 5, 'pps', 'payable', 0)")
    conn.commit()
    want = full_scan_split(conn, 50 * COIN, 100, 2500, 300.0, 2.0)
    conn.close()
    # The reports read an old file as it is (read-only: no roll-up table, no running totals).
    old_report = reports.workers(path)[1]
    assert sum(r[2] for r in old_report) == 2500

    # A chunk size smaller than the file: the backfill continues chunk after chunk from the rows before.
    original = window.BACKFILL_CHUNK
    window.BACKFILL_CHUNK = 700
    try:
        ledger = Ledger(path, Policy("pplns", 100, 2.0), rollup_interval=0)
    finally:
        window.BACKFILL_CHUNK = original
    try:
        assert ledger.query("SELECT COUNT(*) FROM shares WHERE cum IS NULL OR wcum IS NULL") == [(0,)]
        assert ledger.query("SELECT share_difficulty FROM credits") == [(rows[6][3],)]
        assert reports.workers(path)[1] == old_report
        payload = await ledger.record_block(BlockRecord("ab" * 32, 102, ADDRESSES[0], "", 50 * COIN, 50 * COIN,
                                                        300.0, time.time()))
        assert payload["credits"] == [[a, w, v] for (a, w), v in sorted(want.credits.items())]
        assert (payload["fee"], payload["first_share_id"]) == (want.fee, want.first_share_id)
        assert payload["window_difficulty"] == str(want.window_difficulty)
        # New shares continue the totals of the migrated rows.
        await ledger.record_share(ShareRecord(time.time(), ADDRESSES[0], "", 1.0, 1.0, "1", 102, "cd" * 32, False))
        conn = sqlite3.connect(path)
        try:
            assert window.pplns_split_from_totals(conn, 10**8, 0, 2501, 1e9, 1.0, direct_limit=0) == \
                full_scan_split(conn, 10**8, 0, 2501, 1e9, 1.0)
        finally:
            conn.close()
    finally:
        ledger.close()


def test_exact_totals_round_trip():
    for values in ([0.1] * 10, [1e-11, 1024.0, 3.5], [2.0**-1000, 2.0**60]):
        total = window.ZERO
        for v in values:
            total = window.add(total, window.weight_of(v))
        assert window.to_fraction(window.decode(window.encode(total))) == sum((Fraction(v) for v in values),
                                                                              Fraction(0))


@pytest.mark.parametrize("search", ["window", "rollup"])
def test_binary_searches_survive_gaps_in_share_ids(search: str, new_conn):
    """An operator may delete rows by hand: the searches run over id values, so a gap cannot stall them (before,
    ids {1, 2, 3, 10} made ``first_in_window`` loop forever inside the ledger writer, at a found block)."""
    import signal

    def stalled(signum, frame):  # noqa: ANN001
        raise AssertionError("the search did not finish within 5 s")

    conn = new_conn()
    for i in range(10):
        add_share(conn, ADDRESSES[0], WORKERS[0], 1.0, ts=1000.0 + i)
    conn.execute("DELETE FROM shares WHERE id BETWEEN 4 AND 9")
    previous = signal.signal(signal.SIGALRM, stalled)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        if search == "window":
            assert window.first_in_window(conn, 10, Fraction(2)) == 10  # only share 10 is newer than the edge
            assert window.first_in_window(conn, 10, Fraction(9)) == 2  # cum(2) = 2 > 10 - 9
            assert window.first_in_window(conn, 10, Fraction(100)) == 1
        else:
            assert rollup._first_id_from(conn, 1005.0) == 10  # the oldest row at or after ts 1005
            assert rollup._first_id_from(conn, 1001.0) == 2
            assert rollup._first_id_from(conn, 2000.0) == 11  # none that recent: past the newest id
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
