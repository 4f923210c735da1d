"""PPLNS block crediting against the size of the share history, and the ledger's size per day.

Why: a pool below ~100 PH/s never fills the PPLNS window (2 × network difficulty), so crediting a block by
walking the shares newest first read every share ever recorded, inside the single ledger writer, at the very
moment a block is found (minutes and gigabytes after a month). The ledger now finds the window from running
totals stored with each share (``pool/ledger/window.py``); this shows the cost flat from 10^5 shares up.

For each history size the benchmark builds a ledger file on disk with bulk inserts (one transaction, rows
with the running totals ``book.insert_share`` would have written: 100 addresses × 10 workers, integer
difficulties 2^10..2^15, one share per millisecond), then times ``book.insert_block`` with a window longer
than the whole history (mainnet-like network difficulty: every share is in the window, the worst case) and
records the Python heap peak (tracemalloc) and the change in resident memory. Baseline, same run, at the
smallest size: the old full scan (every share newest first through ``accounting.pplns_split``).

Also printed: bytes per share row (table + index, from the file), the cost of ``insert_share`` (the hot path
now reads two running totals) against the old plain insert, the roll-up's bytes per worker-hour, and the
ledger's growth per day at 1,000 shares/s with and without roll-up.

Usage: ``python bench/ledger_pplns.py [--sizes 100000,1000000,10000000] [--dir PATH] [--budget 110]``.
Sizes whose estimated build time would exceed what is left of ``--budget`` seconds are skipped and reported.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ADDRESSES = [f"bc1q{i:03d}" + "q" * 35 for i in range(100)]  # 42 characters, a P2WPKH address's length
WORKERS_PER_ADDRESS = 10
SHARES_PER_SECOND = 1000
DAY = 86_400
MAINNET_DIFFICULTY = 1.1e14
REWARD = 312_500_000 + 2_000_000


def import_pool() -> tuple[ModuleType, ModuleType, ModuleType, ModuleType]:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return (importlib.import_module("pool.ledger.book"), importlib.import_module("pool.ledger.window"),
            importlib.import_module("pool.ledger.accounting"), importlib.import_module("pool.ledger.rollup"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(path: Path, n: int, book: ModuleType, window: ModuleType) -> float:
    """A ledger of ``n`` shares with their running totals; returns seconds taken."""
    start = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.executescript(book.SCHEMA)
    conn.execute("DROP INDEX shares_address")  # built once after the rows: much faster than row by row
    keys = [(a, f"rig{w}", 1 << (10 + (i * WORKERS_PER_ADDRESS + w) % 6))
            for i, a in enumerate(ADDRESSES) for w in range(WORKERS_PER_ADDRESS)]
    per_worker = [0] * len(keys)
    rng = random.Random(n)
    encode = window.encode
    t0 = 1_700_000_000.0
    state = {"cum": 0}

    def rows() -> Any:
        cum = state["cum"]
        for i in range(1, n + 1):
            k = rng.randrange(len(keys))
            address, worker, d = keys[k]
            cum += d
            per_worker[k] += d
            yield (t0 + i / SHARES_PER_SECOND, address, worker, float(d), d * 1.7, f"{i % 65536:x}", 800_000,
                   f"{i:064x}", encode((cum, 0)), encode((per_worker[k], 0)))

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height,"
                     " block_hash, is_block, cum, wcum) VALUES (?,?,?,?,?,?,?,?,0,?,?)", rows())
    conn.execute("COMMIT")
    conn.executescript(book.SCHEMA)
    conn.close()
    return time.perf_counter() - start


def measure(fn: Any, repeat: int = 3) -> tuple[float, int, int]:
    """(best seconds, Python heap peak bytes, RSS change bytes) of ``fn``."""
    best = float("inf")
    peak = 0
    rss = 0
    for _ in range(repeat):
        before = rss_bytes()
        tracemalloc.start()
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        rss = max(rss, rss_bytes() - before)
    return best, peak, rss


def credit_block(path: Path, book: ModuleType, accounting: ModuleType, old: bool) -> Any:
    def run() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            if old:  # the previous insert_block: every share newest first through the pure split
                last = conn.execute("SELECT MAX(id) FROM shares").fetchone()[0]
                rows = conn.execute("SELECT id, address, worker, difficulty FROM shares WHERE id <= ?"
                                    " ORDER BY id DESC", (last,))
                accounting.pplns_split(REWARD, 100, (accounting.WindowShare(*r) for r in rows),
                                       MAINNET_DIFFICULTY, 2.0)
            else:
                block = SimpleNamespace(block_hash="ab" * 32, height=800_001, address=ADDRESSES[0], worker="rig0",
                                        reward=REWARD, subsidy=312_500_000, network_difficulty=MAINNET_DIFFICULTY,
                                        found_at=time.time())
                payload = book.insert_block(conn, book.Policy("pplns", 100, 2.0), block)
                assert payload["first_share_id"] == 1, payload["first_share_id"]
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    return run


def file_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()


def insert_cost(directory: Path, book: ModuleType, count: int = 20_000) -> tuple[float, float]:
    """Seconds per share: book.insert_share (running totals) vs the old plain INSERT, on a 10^5-row table."""
    path = directory / "insert.sqlite3"
    book_mod, window = book, importlib.import_module("pool.ledger.window")
    build(path, 100_000, book_mod, window)
    conn = sqlite3.connect(path, isolation_level=None)
    policy = book.Policy()
    rng = random.Random(1)
    results = []
    for variant in ("old", "new"):
        conn.execute("BEGIN")
        start = time.perf_counter()
        for i in range(count):
            a = ADDRESSES[rng.randrange(100)]
            w = f"rig{rng.randrange(WORKERS_PER_ADDRESS)}"
            if variant == "old":
                conn.execute("INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height,"
                             " block_hash, is_block) VALUES (?,?,?,?,?,?,?,?,?)",
                             (time.time(), a, w, 1024.0, 2000.0, "1a", 800_000, f"{i:064x}", 0))
            else:
                s = SimpleNamespace(ts=time.time(), address=a, worker=w, difficulty=1024.0, share_difficulty=2000.0,
                                    job_id="1a", height=800_000, block_hash=f"{i:064x}", is_block=False)
                book.insert_share(conn, policy, s, 0.0, 0, 0)
        results.append((time.perf_counter() - start) / count)
        conn.execute("ROLLBACK")
    conn.close()
    return results[0], results[1]


def rollup_row_bytes(directory: Path, book: ModuleType, rollup: ModuleType) -> float:
    """Bytes per share_rollup row: roll up a 10^5-share ledger (1,000 workers, 100 s) and measure the table."""
    path = directory / "rollup.sqlite3"
    build(path, 100_000, book, importlib.import_module("pool.ledger.window"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        # Spread the rows over 50 hours so every worker has many hourly rows.
        conn.execute("UPDATE shares SET ts = 1700000000 + (id % 50) * 3600")
        rollup.prune(conn, "solo", 2.0, 0.0, keep_seconds=0, now=2e9)
        rows = conn.execute("SELECT COUNT(*) FROM share_rollup").fetchone()[0]
        used = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name LIKE '%share_rollup%'").fetchone()[0]
    except sqlite3.OperationalError:  # no dbstat in this SQLite build: estimate from the file
        rows = conn.execute("SELECT COUNT(*) FROM share_rollup").fetchone()[0]
        conn.execute("DELETE FROM shares")
        conn.execute("VACUUM")
        used = file_bytes(path)
    finally:
        conn.close()
    return used / rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--dir", default=None, help="where the ledger files go (default: system temp dir)")
    parser.add_argument("--budget", type=float, default=100.0, help="seconds for building histories")
    args = parser.parse_args()
    book, window, accounting, rollup = import_pool()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        directory = Path(tmp)
        print(f"PPLNS block crediting, window longer than the history (network difficulty {MAINNET_DIFFICULTY:.2g},"
              f" 1,000 workers)")
        print(f"{'shares':>11} {'build s':>8} {'credit ms':>10} {'heap peak KB':>13} {'RSS Δ KB':>9}"
              f" {'bytes/row':>10}")
        started = time.perf_counter()
        rate = None
        baseline: tuple[float, int, int] | None = None
        results = []
        for n in sizes:
            if rate is not None and n / rate > args.budget - (time.perf_counter() - started):
                print(f"{n:>11,} skipped: building it would take ~{n / rate:.0f} s, over the --budget")
                continue
            path = directory / f"ledger-{n}.sqlite3"
            took = build(path, n, book, window)
            rate = n / took
            per_row = file_bytes(path) / n
            secs, peak, rss = measure(credit_block(path, book, accounting, old=False))
            results.append((n, secs, peak))
            print(f"{n:>11,} {took:8.1f} {secs * 1e3:10.2f} {peak / 1024:13.1f} {rss / 1024:9.0f} {per_row:10.1f}")
            if baseline is None:
                baseline = measure(credit_block(path, book, accounting, old=True), repeat=1)
                print(f"{'':>11} old full scan at {n:,}: {baseline[0] * 1e3:.1f} ms, heap peak"
                      f" {baseline[1] / 1024:.0f} KB, RSS Δ {baseline[2] / 1024:.0f} KB"
                      f" ({baseline[0] / secs:.0f}x the time of the running totals)")
            os.unlink(path)
        if len(results) > 1:
            (n0, s0, p0), (n1, s1, p1) = results[0], results[-1]
            print(f"from {n0:,} to {n1:,} shares ({n1 // n0}x): credit time x{s1 / s0:.2f}, heap peak x{p1 / p0:.2f}")
        old_ins, new_ins = insert_cost(directory, book)
        print(f"insert_share: {new_ins * 1e6:.1f} us/share with running totals vs {old_ins * 1e6:.1f} us plain"
              f" (x{new_ins / old_ins:.2f}; in one transaction, without the commit's fsync)")
        per_rollup = rollup_row_bytes(directory, book, rollup)
        per_row = file_bytes(directory / "insert.sqlite3") / 100_000
        day_rows = SHARES_PER_SECOND * DAY
        workers = len(ADDRESSES) * WORKERS_PER_ADDRESS
        print(f"ledger per day at {SHARES_PER_SECOND:,} shares/s: {day_rows:,} rows x {per_row:.0f} B ="
              f" {day_rows * per_row / 1e9:.1f} GB of share rows;"
              f" roll-up {workers:,} workers x 24 h x {per_rollup:.0f} B = {workers * 24 * per_rollup / 1e6:.1f} MB/day")
        print("  rows are kept while inside 4x the PPLNS window at the current network difficulty or younger than"
              " one day: the steady state holds max(4 windows, 1 day) of rows, the rest is roll-up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
