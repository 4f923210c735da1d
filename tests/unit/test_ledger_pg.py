"""The ledger on PostgreSQL with several processes and nodes (a real throwaway cluster): the leader lock
(exactly one process runs maturity and payments; another takes over after ``kill -9``), two ledgers writing
to one database (exact running totals, a block credited once, one payment batch), passwords (from the
environment or a file, never shown), the schema version check on both backends, and ``pool ledger migrate``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pool.ledger import book, pg, window
from pool.ledger.accounting import WindowShare, pplns_split
from pool.ledger.book import Policy
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord

ROOT = Path(__file__).resolve().parents[2]
COIN = 100_000_000


# ---- the leader lock: exactly one process runs maturity and payments -------------------------------------------


def _ticks(url: str) -> list[str]:
    conn = pg.connect(url)
    try:
        rows = conn.execute("SELECT payload FROM audit WHERE kind='leader_tick' ORDER BY seq").fetchall()
    finally:
        conn.close()
    return [json.loads(p)["node"] for (p,) in rows]


def _runner(url: str, name: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.leader_runner", url, name], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


async def _wait_for(check, timeout: float) -> float:  # noqa: ANN001
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def test_one_leader_at_a_time_and_takeover_after_kill9(pg_cluster):
    url = pg_cluster.create_database()
    first = _runner(url, "a")
    second = None
    try:
        await _wait_for(lambda: "a" in _ticks(url), 15)
        second = _runner(url, "b")
        await asyncio.sleep(1.5)  # b waits: a holds the lock
        assert set(_ticks(url)) == {"a"}
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        took = await _wait_for(lambda: "b" in _ticks(url), 10)
        ticks = _ticks(url)
        switch = ticks.index("b")
        assert set(ticks[:switch]) == {"a"} and set(ticks[switch:]) == {"b"}, "two leaders at once"
        print(f"\nleader takeover after kill -9: {took:.2f} s")
        ledger = Ledger(url, rollup_interval=0)
        try:
            assert book.verify(ledger.audit_entries()).ok
        finally:
            ledger.close()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


# ---- several pool nodes on one database ----------------------------------------------------------------------


def _share(address: str, worker: str, difficulty: float, h: str, is_block: bool = False) -> ShareRecord:
    return ShareRecord(time.time(), address, worker, difficulty, difficulty, "j", 101, h, is_block)


async def test_two_nodes_share_one_ledger(pg_cluster):
    """Two ledgers (two pool nodes) record shares at once: the running totals stay exact (the PPLNS split
    equals a full scan), a block recorded by both is credited once, and a payment batch is created once."""
    url = pg_cluster.create_database()
    policy = Policy("pplns", 100, 2.0)
    node_a, node_b = Ledger(url, policy, rollup_interval=0), Ledger(url, policy, rollup_interval=0)
    try:
        futures = []
        for i in range(300):
            ledger, address = (node_a, "bcrt1qa") if i % 2 else (node_b, "bcrt1qb")
            futures.append(ledger.record_share(_share(address, f"w{i % 3}", [0.5, 1.0, 2.25][i % 3], f"{i:064x}")))
        await asyncio.gather(*futures)
        conn = pg.connect(url)
        try:
            rows = conn.execute("SELECT id, address, worker, difficulty FROM shares ORDER BY id").fetchall()
            last = rows[-1][0]

            for nd in (10.0, 100.0, 1e6):
                want = pplns_split(50 * COIN, 100, (WindowShare(*r) for r in reversed(rows)), nd, 2.0)
                for limit in (0, 10**9):
                    assert window.pplns_split_from_totals(conn, 50 * COIN, 100, last, nd, 2.0, limit) == want
        finally:
            conn.close()

        h = "ab" * 32
        record = BlockRecord(h, 102, "bcrt1qa", "w1", 50 * COIN, 50 * COIN, 100.0, time.time())
        results = await asyncio.gather(node_a.record_block(record), node_b.record_block(record))
        assert sorted("duplicate" in r for r in results) == [False, True]
        credits = node_a.query("SELECT address, worker, SUM(amount), COUNT(*) FROM credits WHERE block_hash=?"
                               " GROUP BY address, worker", (h,))
        assert all(n == 1 for *_, n in credits)
        fee = node_a.query("SELECT fee FROM blocks WHERE block_hash=?", (h,))[0][0]
        assert sum(v for _, _, v, _ in credits) + fee == 50 * COIN
        await node_a.set_block_status(h, "confirmed", 101)

        batches: list[list[tuple[str, int]]] = []
        barrier = threading.Barrier(2)

        def pay(ledger: Ledger, name: str) -> None:
            barrier.wait()
            batches.append(ledger.run_sync(lambda c: book.create_payments(c, name, 1000)))

        threads = [threading.Thread(target=pay, args=(n, name)) for n, name in ((node_a, "x"), (node_b, "y"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(len(b) for b in batches) == [0, 2], batches
        assert node_a.query("SELECT COUNT(DISTINCT batch) FROM payments") == [(1,)]
        assert book.verify(node_b.audit_entries()).ok
    finally:
        node_a.close()
        node_b.close()


# ---- passwords --------------------------------------------------------------------------------------------


def test_password_from_env_or_file_and_never_in_messages(pg_cluster, tmp_path: Path, monkeypatch):
    secret = "s3cret-Pw-0x5eed"
    pg_cluster.admin(f"CREATE ROLE ledger_user LOGIN PASSWORD '{secret}'")
    url = pg_cluster.create_database()
    name = url.rsplit("/", 1)[1]
    pg_cluster.admin(f"ALTER DATABASE {name} OWNER TO ledger_user")
    user_url = pg_cluster.url(name, user="ledger_user")

    from pool.config import ConfigError, parse_config

    def config(ledger: dict, env: dict[str, str]):  # noqa: ANN202
        return parse_config({"node": {"network": "regtest", "rpc_url": "http://127.0.0.1:1"},
                             "payout": {"scheme": "solo"}, "ledger": ledger}, env=env)

    cfg = config({"url": user_url}, {"POOL_LEDGER_PASSWORD": secret})
    assert secret not in repr(cfg) and secret not in repr(cfg.ledger_source)
    ledger = Ledger(cfg.ledger_source, rollup_interval=0)
    ledger.close()
    pw_file = tmp_path / "pw"
    pw_file.write_text(secret + "\n")
    cfg = config({"url": user_url, "password_file": str(pw_file)}, {})
    Ledger(cfg.ledger_source, rollup_interval=0).close()

    with pytest.raises(ConfigError, match="holds a password"):
        config({"url": pg_cluster.url(name, user=f"ledger_user:{secret}")}, {})
    with pytest.raises(ConfigError, match="ledger.path and ledger.url"):
        config({"url": user_url, "path": "x.sqlite3"}, {})
    with pytest.raises(ConfigError, match="postgresql://"):
        config({"url": "mysql://x@y/z"}, {})

    # A wrong password: the error names the server, never the password (given or in the URL).
    bad = config({"url": user_url}, {"POOL_LEDGER_PASSWORD": "wrong-" + secret})
    with pytest.raises(pg.Error) as failed:
        Ledger(bad.ledger_source, rollup_interval=0)
    assert secret not in str(failed.value)
    # The CLI reads the password from the environment, and redacts one given in a URL.
    env = dict(os.environ, POOL_LEDGER_PASSWORD=secret)
    res = subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--ledger", user_url], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    # ... or from ledger.password_file of the config it is given.
    cfg_file = tmp_path / "pool.toml"
    cfg_file.write_text(f'[node]\nnetwork = "regtest"\nrpc_url = "http://127.0.0.1:1"\n[payout]\nscheme = "solo"\n'
                        f'[ledger]\nurl = "{user_url}"\npassword_file = "{pw_file}"\n')
    no_env = {k: v for k, v in os.environ.items() if k != "POOL_LEDGER_PASSWORD"}
    res = subprocess.run([sys.executable, "-m", "pool", "blocks", "--config", str(cfg_file), "--json"], env=no_env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0 and json.loads(res.stdout) == [], res.stdout + res.stderr
    env["POOL_LEDGER_PASSWORD"] = "nope"
    res = subprocess.run([sys.executable, "-m", "pool", "blocks", "--ledger",
                          pg_cluster.url(name, user=f"ledger_user:{secret}")], env=env,
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 1 and secret not in res.stdout + res.stderr


# ---- the schema version --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ledger_backend", ["sqlite", "postgresql"])
def test_newer_schema_is_refused(ledger_target):
    from pool.ledger import schema

    target = ledger_target()
    Ledger(target, rollup_interval=0).close()
    conn = pg.connect(str(target)) if ledger_target.is_pg else sqlite3.connect(target)
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(schema.VERSION,)]
        conn.execute("UPDATE schema_version SET version = ?", (schema.VERSION + 1,))
        with contextlib.suppress(AttributeError):
            conn.commit()
    finally:
        conn.close()
    with pytest.raises(schema.SchemaError, match=f"schema version {schema.VERSION + 1}, newer than this pool's"
                                                 f" {schema.VERSION}"):
        Ledger(target, rollup_interval=0)


# ---- pool ledger migrate ---------------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pool", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)


async def _sqlite_ledger_with_history(path: Path) -> None:
    ledger = Ledger(path, Policy("pplns", 100, 2.0), rollup_interval=0, keep_seconds=0)
    try:
        start = time.time() - 3 * 3600
        for i in range(200):
            await ledger.record_share(ShareRecord(start + i * 50, f"bcrt1q{'ab'[i % 2]}", f"w{i % 3}",
                                                  [0.5, 1.0, 2.25][i % 3], 1.0, "j", 101, f"{i:064x}", False))
        for n, status in enumerate(("confirmed", "orphaned", "pending")):
            h = f"{1000 + n:064x}"
            await ledger.record_share(ShareRecord(time.time(), "bcrt1qa", "w0", 1.0, 1.0, "j", 101, h, True))
            await ledger.record_block(BlockRecord(h, 101 + n, "bcrt1qa", "w0", 50 * COIN, 50 * COIN, 20.0,
                                                  time.time()))
            await ledger.set_block_status(h, status, 101 if status == "confirmed" else -1)
        ledger.run_sync(lambda c: book.create_payments(c, "b1", 1000))
        ledger.run_sync(lambda c: book.finish_payments(c, "b1", "sent", "cd" * 32))
        assert await asyncio.to_thread(ledger.rollup, 20.0, 50) > 0  # some hours rolled up: that table too
    finally:
        ledger.close()


async def test_ledger_migrate_copies_and_verifies(pg_cluster, tmp_path: Path):
    source = tmp_path / "ledger.sqlite3"
    await _sqlite_ledger_with_history(source)
    url = pg_cluster.create_database()
    res = _cli("ledger", "migrate", "--from", f"sqlite:{source}", "--to", url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "audit log OK" in res.stdout

    # Every report reads the same from both.
    for report in (["workers"], ["blocks"], ["payouts"], ["payouts", "--by", "worker"], ["audit", "export"]):
        a = _cli(*report, "--ledger", str(source), "--json")
        b = _cli(*report, "--ledger", url, "--json")
        assert a.returncode == b.returncode == 0, a.stderr + b.stderr
        assert json.loads(a.stdout) == json.loads(b.stdout), report

    # The copy goes on where the source stopped: the next ids and the next audit entry continue.
    last_id = sqlite3.connect(source).execute("SELECT MAX(id) FROM shares").fetchone()[0]
    ledger = Ledger(url, Policy("pplns", 100, 2.0), rollup_interval=0)
    try:
        assert await ledger.record_share(ShareRecord(time.time(), "bcrt1qa", "w0", 1.0, 1.0, "j", 102, "ef" * 32,
                                                     False)) == last_id + 1
        await ledger.set_block_status(f"{1002:064x}", "confirmed", 101)
        assert book.verify(ledger.audit_entries()).ok
    finally:
        ledger.close()

    # Not into a database that already holds a ledger.
    res = _cli("ledger", "migrate", "--from", f"sqlite:{source}", "--to", url)
    assert res.returncode == 1 and "already holds ledger rows" in res.stderr, res.stderr
    # A missing source, a password in the URL: refused with the reason.
    res = _cli("ledger", "migrate", "--from", f"sqlite:{tmp_path / 'nope.sqlite3'}", "--to",
               pg_cluster.create_database())
    assert res.returncode == 1 and "no SQLite ledger" in res.stderr
    res = _cli("ledger", "migrate", "--from", f"sqlite:{source}", "--to",
               pg_cluster.url("x", user="pool:hunter2"))
    assert res.returncode == 2 and "hunter2" not in res.stderr


async def test_ledger_migrate_of_a_broken_chain_fails(pg_cluster, tmp_path: Path):
    source = tmp_path / "ledger.sqlite3"
    await _sqlite_ledger_with_history(source)
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET payload = '{\"forged\":1}' WHERE seq = 2")
    conn.close()
    res = _cli("ledger", "migrate", "--from", f"sqlite:{source}", "--to", pg_cluster.create_database())
    assert res.returncode == 1 and "audit chain" in res.stderr and "entry 2" in res.stderr, res.stderr


# ---- sessions lost while idle --------------------------------------------------------------------------------


async def test_sessions_lost_while_idle_cost_no_write(pg_cluster):
    """A server restart or failover while the ledger is idle kills its kept sessions; the next share, payment
    step and read are not failed for it (nothing had run on the dead session: they run again on a new one)."""
    url = pg_cluster.create_database()
    name = url.rsplit("/", 1)[1]
    ledger = Ledger(url, Policy("pplns", 100, 2.0), rollup_interval=0)
    try:
        first = await ledger.record_share(_share("bcrt1qa", "w", 1.0, "01" * 32))
        ledger.run_sync(lambda c: book.audit(c, "note", {"n": 1}))
        assert ledger.query("SELECT COUNT(*) FROM shares") == [(1,)]
        pg_cluster.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                         " AND pid <> pg_backend_pid()")
        await asyncio.sleep(0.2)
        assert await asyncio.wait_for(ledger.record_share(_share("bcrt1qa", "w", 1.0, "02" * 32)), 10) > first
        ledger.run_sync(lambda c: book.audit(c, "note", {"n": 2}))
        assert ledger.query("SELECT COUNT(*) FROM shares") == [(2,)]
        assert ledger.unavailable_since is None
        assert book.verify(ledger.audit_entries()).ok
    finally:
        ledger.close()


async def test_batch_totals_stay_exact_with_shares_not_prefetched(pg_cluster):
    """A batch's shares continue running totals read once for the batch; a share inserted by another op of
    the same batch (not prefetched) or an op that fails and is undone must not leave them behind."""
    url = pg_cluster.create_database()
    ledger = Ledger(url, Policy("pplns", 0, 1.0), rollup_interval=0, max_wait=0.2)
    try:
        policy = ledger.policy

        def raw(i: int):  # noqa: ANN202 - an insert_share the ledger cannot see coming
            return lambda c: book.insert_share(c, policy, _share("bcrt1qz", "raw", 0.75, f"{10_000 + i:064x}"),
                                               0.0, 0, 0)

        def boom(c) -> None:  # noqa: ANN001
            book.insert_share(c, policy, _share("bcrt1qa", "w0", 5.0, "ff" * 32), 0.0, 0, 0)
            raise ValueError("undone")

        sizes: list[int] = []
        ledger.on_commit = lambda size, seconds: sizes.append(size)
        failed = 0
        for part in range(2):  # one batch with foreign inserts, then one where an op fails and is undone
            futures = []
            for i in range(30 * part, 30 * part + 30):
                futures.append(ledger.record_share(_share("bcrt1qa", f"w{i % 3}", [0.5, 1.0, 2.25][i % 3],
                                                          f"{i:064x}")))
                if i % 10 == 3:
                    futures.append(ledger.submit(raw(i)))
                if i == 45:
                    futures.append(ledger.submit(boom))
            done = await asyncio.gather(*futures, return_exceptions=True)
            failed += sum(isinstance(d, ValueError) for d in done)
        assert failed == 1 and sizes == [33, 34], sizes
        conn = pg.connect(url)
        try:
            rows = conn.execute("SELECT id, address, worker, difficulty FROM shares ORDER BY id").fetchall()
            assert len(rows) == 66
            # Every row's totals are the exact sums of the rows up to it (pool-wide and its worker's).
            total, per_worker = window.ZERO, {}
            for (_, address, worker, difficulty), (cum, wcum) in zip(
                    rows, conn.execute("SELECT cum, wcum FROM shares ORDER BY id").fetchall(), strict=True):
                total = window.add(total, window.weight_of(difficulty))
                per_worker[(address, worker)] = window.add(per_worker.get((address, worker), window.ZERO),
                                                           window.weight_of(difficulty))
                assert window.to_fraction(window.decode(cum)) == window.to_fraction(total)
                assert window.to_fraction(window.decode(wcum)) == window.to_fraction(per_worker[(address, worker)])
            for nd in (5.0, 17.0, 40.0, 1e6):
                want = pplns_split(10**8, 0, (WindowShare(*r) for r in reversed(rows)), nd, 1.0)
                assert window.pplns_split_from_totals(conn, 10**8, 0, rows[-1][0], nd, 1.0, 0) == want
        finally:
            conn.close()
    finally:
        ledger.close()


def test_newest_share_of_a_worker_is_one_index_probe(pg_cluster):
    url = pg_cluster.create_database()
    Ledger(url, rollup_interval=0).close()
    conn = pg.connect(url)
    try:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT wcum FROM shares WHERE address = ? AND worker = ? ORDER BY id DESC LIMIT 1",
            ("a", "w")).fetchall())
    finally:
        conn.close()
    assert "Index Scan Backward using shares_address" in plan and "Sort" not in plan, plan
