"""Ledger group commit: acknowledged shares/s through ``Ledger.record_share`` vs naive and one-transaction inserts.

Why: the pool answers ``true`` to a share only after its ledger row is durable (``synchronous=FULL``), so the
commit path bounds accepted shares/s. Group commit puts the shares of many connections into one transaction
(one fsync per batch). C producers (asyncio tasks that each await their share's future before sending the
next, as a connection does) drive the real ``Ledger`` for C in 1, 10, 100, 1000. Two baselines run in the
same process on the same disk (one temporary directory):

* naive: one transaction per share, WAL + ``synchronous=FULL`` -- what acknowledge-after-commit would cost
  without group commit (one fsync per share); every ratio is against this.
* one-transaction: all inserts in a single transaction, one commit at the end -- the upper bound, with no
  per-share durability at all.

All three run the same ``book.insert_share`` SQL. The same group-commit runs and the naive baseline are then
repeated on PostgreSQL (a throwaway cluster started for the run, as the tests do, or ``--pg-url`` for a server
of your own; ``--no-postgres`` skips it), printed next to SQLite's figures at the same concurrency: both
answer a share only after its transaction is durable (PostgreSQL: ``synchronous_commit=on``, fsync on).
Usage: ``python bench/ledger_commit.py [--seconds 3] [--dir PATH] [--check] [--pg-url URL | --no-postgres]``. ``--dir`` puts the databases on another filesystem (the default is the system
temporary directory; a tmpfs there makes fsync free and the figures meaningless). Exits 0 unless ``--check``
is given and group commit at C=100 is not at least 2x the naive baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CONCURRENCY = (1, 10, 100, 1000)
CHECK_AT = 100
TARGET_RATIO = 2.0
WARMUP = 0.25  # seconds at the start of each group-commit run that are not counted
STOP_TIMEOUT = 30.0  # bound on waiting for in-flight shares after a run's deadline


def import_pool() -> tuple[ModuleType, ModuleType]:
    """Import the package from this checkout even when it is not installed (the bench runs from a clone)."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("pool.ledger.sqlite"), importlib.import_module("pool.ledger.book")


def make_record(sqlite_mod: ModuleType, i: int) -> Any:
    """A share as the coordinator records it (PPLNS: one row per share, no credit rows)."""
    return sqlite_mod.ShareRecord(
        ts=time.time(),
        address="bcrt1qbenchbenchbenchbenchbenchbenchbench0",
        worker=f"w{i % 1000}",
        difficulty=1024.0,
        share_difficulty=2048.5,
        job_id=f"{i % 4096:x}",
        height=200,
        block_hash=f"{i:064x}",
        is_block=False,
        network_difficulty=4.656542373906925e-10,
        subsidy=5_000_000_000,
        expected_fees=0,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def connect(path: Path) -> sqlite3.Connection:
    """The same connection settings as ``Ledger._connect``: WAL, synchronous=FULL, autocommit mode."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def naive(path: Path, seconds: float, sqlite_mod: ModuleType, book: ModuleType) -> dict[str, float]:
    """One BEGIN/INSERT/COMMIT per share: each acknowledgement pays its own fsync."""
    conn = connect(path)
    conn.executescript(book.SCHEMA)
    return _one_per_transaction(conn, seconds, sqlite_mod, book)


def one_transaction(path: Path, seconds: float, sqlite_mod: ModuleType, book: ModuleType) -> dict[str, float]:
    """Every insert in one transaction and a single commit: the upper bound (nothing durable until the end)."""
    conn = connect(path)
    conn.executescript(book.SCHEMA)
    policy = book.Policy()
    perf = time.perf_counter
    i = 0
    t0 = perf()
    deadline = t0 + seconds
    conn.execute("BEGIN IMMEDIATE")
    while True:
        for _ in range(1000):
            s = make_record(sqlite_mod, i)
            book.insert_share(conn, policy, s, s.network_difficulty, s.subsidy, s.expected_fees)
            i += 1
        if perf() >= deadline:
            break
    conn.execute("COMMIT")
    elapsed = perf() - t0
    conn.close()
    return {"rate": i / elapsed, "batch": float(i), "p50": elapsed, "p99": elapsed, "count": i}


async def group_commit(path: Path | str, seconds: float, producers: int, sqlite_mod: ModuleType) -> dict[str, float]:
    """``producers`` tasks, each awaiting its share's commit before recording the next (``path``: a SQLite file
    or a ``postgresql://`` URL)."""
    ledger = sqlite_mod.Ledger(path, rollup_interval=0)
    batches: list[int] = []
    started = time.perf_counter()
    ledger.on_commit = lambda size, _secs: batches.append(size)  # writer thread; list.append is atomic
    perf = time.perf_counter
    counted_from = started + WARMUP
    deadline = counted_from + seconds
    acks: list[list[tuple[float, float]]] = [[] for _ in range(producers)]
    errors = 0

    async def producer(n: int) -> None:
        nonlocal errors
        mine = acks[n]
        i = n
        while True:
            start = perf()
            if start >= deadline:
                return
            try:
                await ledger.record_share(make_record(sqlite_mod, i))
            except Exception:
                errors += 1
                continue
            done = perf()
            if start >= counted_from:
                mine.append((done, done - start))
            i += producers

    tasks = [asyncio.create_task(producer(n)) for n in range(producers)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + WARMUP + STOP_TIMEOUT)
    finally:
        for task in tasks:
            task.cancel()
        ledger.close()
    # Rate: acknowledgements that arrived inside the counted window. Latency: every share started in it.
    in_window = sum(1 for per_task in acks for done, _ in per_task if done <= deadline)
    latencies = sorted(lat for per_task in acks for _, lat in per_task)
    rows = ledger.query("SELECT COUNT(*) FROM shares")[0][0]
    return {
        "rate": in_window / seconds,
        "batch": sum(batches) / len(batches) if batches else 0.0,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "count": len(latencies),
        "rows": rows,
        "errors": errors,
    }


def naive_pg(url: str, seconds: float, sqlite_mod: ModuleType, book: ModuleType) -> dict[str, float]:
    """PostgreSQL, one transaction per share (with the ledger's write lock, as the writer takes it)."""
    from pool.ledger import pg

    sqlite_mod.Ledger(url, rollup_interval=0).close()  # the schema
    conn = pg.connect(url)
    return _one_per_transaction(conn, seconds, sqlite_mod, book)


def _one_per_transaction(conn: Any, seconds: float, sqlite_mod: ModuleType, book: ModuleType) -> dict[str, float]:
    """The naive baseline on either database: BEGIN IMMEDIATE, one share, COMMIT, until ``seconds`` pass."""
    policy = book.Policy()
    latencies: list[float] = []
    i = 0
    perf = time.perf_counter
    t0 = now = perf()
    deadline = t0 + seconds
    while now < deadline:
        s = make_record(sqlite_mod, i)
        start = perf()
        conn.execute("BEGIN IMMEDIATE")
        book.insert_share(conn, policy, s, s.network_difficulty, s.subsidy, s.expected_fees)
        conn.execute("COMMIT")
        now = perf()
        latencies.append(now - start)
        i += 1
    conn.close()
    latencies.sort()
    return {"rate": i / (now - t0), "batch": 1.0, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99), "count": i}


def postgres_runs(args: argparse.Namespace, sqlite_mod: ModuleType, book: ModuleType
                  ) -> tuple[str, dict[str, float], dict[int, dict[str, float]]] | None:
    """The naive baseline and the group-commit runs on PostgreSQL; None when it is skipped or unavailable."""
    if args.no_postgres:
        return None
    cluster = None
    if args.pg_url:
        def new_db() -> str:
            return str(args.pg_url)
        where = "PostgreSQL at --pg-url (the same database for every run: it must be empty)"
    else:
        try:
            from tests.support.postgres import start_cluster

            cluster = start_cluster()
        except Exception as exc:  # noqa: BLE001 - report and go on with SQLite alone
            print(f"PostgreSQL: skipped ({exc})")
            return None
        new_db = cluster.create_database
        where = f"PostgreSQL {cluster.bin_dir.parent.name}, throwaway cluster in {cluster.dir} ({filesystem_of(cluster.dir)})"
    try:
        base = naive_pg(new_db(), args.seconds, sqlite_mod, book)
        results = {c: run_loop(lambda c=c: group_commit(new_db(), args.seconds, c, sqlite_mod)) for c in CONCURRENCY}
    finally:
        if cluster is not None:
            cluster.destroy()
    return where, base, results


def fsync_latency(path: Path, count: int = 200) -> tuple[float, float]:
    """p50/p99 seconds of a 4 KiB append + fsync in ``path``: what one durable commit costs on this disk."""
    times: list[float] = []
    block = os.urandom(4096)
    fd = os.open(path / "fsync.probe", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(count):
            start = time.perf_counter()
            os.write(fd, block)
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.99)


def filesystem_of(path: Path) -> str:
    """Filesystem type and device of ``path`` (fsync cost depends on it), best effort."""
    try:
        out = subprocess.run(["df", "-PT", str(path)], capture_output=True, text=True, timeout=10, check=False)
        fields = out.stdout.strip().splitlines()[-1].split()
        return f"{fields[1]} on {fields[0]}"
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown filesystem"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="time per measurement (6 of them; default 3)")
    parser.add_argument("--dir", default=None, help="where to create the temporary databases (default: system tmp)")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if group commit at C={CHECK_AT} is below {TARGET_RATIO:g}x the naive baseline")
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database to use instead of a throwaway"
                        " cluster (password: POOL_LEDGER_PASSWORD is not read here; use trust or .pgpass)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 600:
        parser.error("--seconds must be in (0, 600]")
    return args


def run_loop(coro_factory: Callable[[], Any]) -> Any:
    """Run on uvloop like the pool does (``pool run``), falling back to the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro_factory())
    return uvloop.run(coro_factory())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sqlite_mod, book = import_pool()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=args.dir) as tmp:
        tmp_path = Path(tmp)
        print(f"ledger commit benchmark: {args.seconds:g}s per run, databases in {tmp_path} "
              f"({filesystem_of(tmp_path)}), sqlite {sqlite3.sqlite_version}, WAL + synchronous=FULL")
        f50, f99 = fsync_latency(tmp_path)
        print(f"raw 4 KiB write+fsync on this disk: p50 {f50 * 1000:.3f} ms, p99 {f99 * 1000:.3f} ms")
        base = naive(tmp_path / "naive.sqlite", args.seconds, sqlite_mod, book)
        upper = one_transaction(tmp_path / "bulk.sqlite", args.seconds, sqlite_mod, book)
        results: dict[int, dict[str, float]] = {}
        for c in CONCURRENCY:
            results[c] = run_loop(lambda c=c: group_commit(tmp_path / f"group-{c}.sqlite", args.seconds, c, sqlite_mod))
            r = results[c]
            if r["rows"] < r["count"]:
                print(f"WARNING: C={c}: {r['count']} shares acknowledged but only {r['rows']} rows in the ledger")

    print(f"{'variant':<26}{'shares/s':>11}{'mean batch':>12}{'p50 ms':>9}{'p99 ms':>9}{'vs naive':>10}{'of bound':>10}")
    rows: list[tuple[str, dict[str, float]]] = [("naive (1 txn per share)", base)]
    rows += [(f"group commit C={c}", results[c]) for c in CONCURRENCY]
    rows.append(("one transaction (bound)", upper))
    for name, r in rows:
        if r is upper:
            lat = f"{'-':>9}{'-':>9}"
        else:
            lat = f"{r['p50'] * 1000:>9.3f}{r['p99'] * 1000:>9.3f}"
        print(f"{name:<26}{r['rate']:>11,.0f}{r['batch']:>12,.1f}{lat}"
              f"{r['rate'] / base['rate']:>9.2f}x{r['rate'] / upper['rate']:>10.1%}")
    pg_result = postgres_runs(args, sqlite_mod, book)
    if pg_result is not None:
        where, pg_base, pg_results = pg_result
        print(f"\n{where}, synchronous_commit=on: acknowledged shares/s next to SQLite's")
        print(f"{'variant':<26}{'PG shares/s':>12}{'mean batch':>12}{'p50 ms':>9}{'p99 ms':>9}{'SQLite':>11}"
              f"{'PG/SQLite':>11}")
        for name, r, other in [("naive (1 txn per share)", pg_base, base)] + [
                (f"group commit C={c}", pg_results[c], results[c]) for c in CONCURRENCY]:
            print(f"{name:<26}{r['rate']:>12,.0f}{r['batch']:>12,.1f}{r['p50'] * 1000:>9.3f}{r['p99'] * 1000:>9.3f}"
                  f"{other['rate']:>11,.0f}{r['rate'] / other['rate']:>10.2f}x")
            if r.get("rows", r["count"]) < r["count"] or r.get("errors"):
                print(f"WARNING: PostgreSQL {name}: rows {r.get('rows')} < acks {r['count']} or errors")
    bad = [c for c, r in results.items() if r.get("errors")]
    if bad:
        print(f"WARNING: ledger errors at C={bad}")
    ratio = results[CHECK_AT]["rate"] / base["rate"]
    passed = ratio >= TARGET_RATIO and not bad
    print(f"target group commit C={CHECK_AT} >= {TARGET_RATIO:g}x naive: {'PASS' if passed else 'FAIL'} ({ratio:.1f}x)")
    return 1 if (args.check and not passed) else 0


if __name__ == "__main__":
    sys.exit(main())
