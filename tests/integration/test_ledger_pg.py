"""Pools on a PostgreSQL ledger with a real regtest bitcoind: the database server restarted under a share flood
(a cluster of the test's own: no acknowledged share lost, error 20 and never ``true`` while it is down, recovery
without a pool restart); two pool nodes on one ledger and one wallet (one payer, each balance paid once, a
hand-over when the payer stops); a clear start-up error when the database is unreachable."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_pool
from tests.support.chain import bits_target, connect_miner, display_hash, share_target, solve_where
from tests.support.postgres import PgCluster, cluster_or_skip

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARE_DIFF = 1e-11
COIN = 100_000_000


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    """A cluster of the test's own, for tests that stop and start the server."""
    with cluster_or_skip() as cluster:
        yield cluster


# ---- PostgreSQL restart under load ----------------------------------------------------------------------------


async def test_postgres_restart_under_load_loses_no_acknowledged_share(regtest, tmp_path: Path, own_cluster):
    url = own_cluster.create_database()
    miner_address = regtest.rpc("getnewaddress", wallet="pool")
    overrides = {"difficulty": {"start": SHARE_DIFF, "min": 1e-12, "max": 1e6},
                 "stratum": {"submit_rate": 1e6, "submit_burst": 1e7}, "ledger": {"url": url}}
    async with running_pool(regtest, tmp_path / "pool", **overrides) as app:
        miners = [await connect_miner(app.server.port, f"{miner_address}.m{i}", f"d={SHARE_DIFF}") for i in range(4)]
        acked: dict[str, str] = {}  # share hash -> worker
        replies: list[tuple[float, bool, int | None]] = []  # (monotonic time, true?, error code)
        stop = asyncio.Event()

        async def flood(miner) -> None:  # noqa: ANN001
            while not stop.is_set():
                job = miner.job
                net_t = bits_target(job.nbits)
                share_t = share_target(miner.job_difficulty.get(job.job_id, miner.difficulty))
                en2, ntime, nonce, h = solve_where(miner, job, lambda v, lo=net_t, hi=share_t: lo < v <= hi)
                params = [miner.username, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
                reply = await miner.request("mining.submit", params, timeout=30)
                error = reply.get("error")
                replies.append((time.monotonic(), reply.get("result") is True, error[0] if error else None))
                if reply.get("result") is True:
                    acked[display_hash(h)] = miner.username.partition(".")[2]
                elif error is None or error[0] != 20:
                    raise AssertionError(f"unexpected answer {reply}")
                await asyncio.sleep(0.002)

        tasks = [asyncio.create_task(flood(m)) for m in miners for _ in range(2)]
        try:
            await asyncio.sleep(1.5)
            before = len(acked)
            assert before > 20, f"flood too slow: {before}"
            await asyncio.to_thread(own_cluster.stop, "immediate")  # a crash of the database server
            down_at = time.monotonic()
            await asyncio.sleep(2.0)
            restart_at = time.monotonic()
            down_replies = [r for r in replies if down_at + 0.3 < r[0] < restart_at]
            assert down_replies, "no share was answered while PostgreSQL was down"
            assert not any(ok for _, ok, _ in down_replies), "a share was answered true while PostgreSQL was down"
            assert {code for _, _, code in down_replies} == {20}
            assert app.readiness_problems(), "/readyz must say the ledger is unreachable"
            assert app.metrics.registry.get_sample_value("pool_ledger_up") == 0
            await asyncio.to_thread(own_cluster.start)
            deadline = time.monotonic() + 30
            while not any(ok and t > restart_at for t, ok, _ in replies):
                assert time.monotonic() < deadline, "no share accepted after PostgreSQL came back"
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        finally:
            stop.set()
            await asyncio.wait(tasks, timeout=10)
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for m in miners:
                await m.close()
        errors = [r for r in results if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        assert not errors, errors
        assert not [p for p in app.readiness_problems() if "ledger" in p]
        assert app.metrics.registry.get_sample_value("pool_ledger_up") == 1
        # The leader lock's session died with the server too: it is taken again once the server is back.
        deadline = time.monotonic() + 15
        while app.metrics.registry.get_sample_value("pool_ledger_leader") != 1:
            assert time.monotonic() < deadline, "the leader lock was not taken again"
            await asyncio.sleep(0.1)
        rows = app.ledger.query("SELECT block_hash, worker FROM shares")
    in_ledger = dict(rows)
    lost = [h for h in acked if h not in in_ledger]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged shares missing after the restart"
    assert all(in_ledger[h] == w for h, w in acked.items())
    refused = sum(1 for _, ok, _ in replies if not ok)
    print(f"\npg restart: acked={len(acked)} refused(20)={refused} rows={len(rows)}")
    res = subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--ledger", url],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr




def test_pool_run_with_unreachable_ledger_database_says_why(regtest, tmp_path: Path):
    from pool.node.regtest import free_port

    config = tmp_path / "pool.toml"
    config.write_text(f"""
data_dir = "{tmp_path / 'data'}"
[node]
rpc_url = "{regtest.rpc_url}"
rpc_user = "{regtest.user}"
rpc_password = "{regtest.password}"
network = "regtest"
[stratum]
host = "127.0.0.1"
port = 0
[payout]
scheme = "solo"
[metrics]
enabled = false
[ledger]
url = "postgresql://pool@127.0.0.1:{free_port()}/pool"
""")
    res = subprocess.run([sys.executable, "-m", "pool", "run", "--config", str(config)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env=dict(os.environ, POOL_LEDGER_PASSWORD="hunter2"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "cannot start: ledger database" in res.stderr and "Traceback" not in res.stderr
    assert "hunter2" not in res.stdout + res.stderr


# ---- two pool nodes, one ledger: one payer, and a hand-over -------------------------------------------------


async def test_two_pool_nodes_pay_once_and_hand_over(regtest, tmp_path: Path, pg_cluster):
    """Two pools on one PostgreSQL ledger and one wallet, both with payments on and short intervals: only the
    holder of the leader lock matures blocks and pays, each balance once; stopped, it hands over to the other,
    which pays the next block's credits once too."""
    from pool.app import PoolApp
    from pool.ledger import book as ledger_book
    from pool.node.payouts import COMMENT_PREFIX
    from tests.conftest import pool_config
    from tests.support.chain import arpc
    from tests.support.payout_check import btc_to_sats, mine_share

    url = pg_cluster.create_database()
    if "payees" not in regtest.rpc("listwallets"):
        regtest.rpc("createwallet", "payees")
    payee = await arpc(regtest, "getnewaddress", wallet="payees")
    sink = await arpc(regtest, "getnewaddress", wallet="pool")

    async def payout_txids() -> set[str]:
        txs = await arpc(regtest, "listtransactions", "*", 10_000, 0, True, wallet="pool")
        return {t["txid"] for t in txs if t.get("category") == "send"
                and str(t.get("comment", "")).startswith(COMMENT_PREFIX)}

    earlier = await payout_txids()
    overrides = {
        "difficulty": {"start": SHARE_DIFF, "min": 1e-12, "max": 1e6},
        "ledger": {"url": url},
        "payout": {"scheme": "pplns", "fee_percent": 1.0, "maturity_margin": 1, "maturity_check_interval": 0.2,
                   "payments_enabled": True, "payment_threshold_sats": 10_000, "payment_interval": 0.2,
                   "payment_grace": 3600, "wallet": "pool"},
    }
    apps = {}
    for name in ("a", "b"):
        apps[name] = PoolApp(await asyncio.to_thread(pool_config, regtest, tmp_path / name, **overrides))
        await apps[name].start()
    miners = []

    def leaders() -> list[str]:
        return [n for n, app in apps.items() if app.metrics.registry.get_sample_value("pool_ledger_leader") == 1]

    async def wait(check, timeout: float, what: str) -> None:  # noqa: ANN001 - a check, plain or async
        deadline = time.monotonic() + timeout
        while not ((await result) if asyncio.iscoroutine(result := check()) else result):
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.1)

    async def mine_block_and_wait_paid(app, batches: int) -> None:  # noqa: ANN001
        miner = await connect_miner(app.server.port, f"{payee}.rig", f"d={SHARE_DIFF}")
        miners.append(miner)
        for _ in range(4):
            await mine_share(miner, regtest)
        await mine_share(miner, regtest, block=True)
        await arpc(regtest, "generatetoaddress", 101, sink)

        async def paid() -> bool:
            rows = app.ledger.query("SELECT COUNT(DISTINCT batch) FROM payments WHERE status='sent'")
            return rows[0][0] >= batches and not app.ledger.query(
                "SELECT 1 FROM payments WHERE status='sending'")

        await wait(paid, 60, f"payment batch {batches} not sent")
        await asyncio.sleep(1.0)  # both nodes run several more rounds: nothing more may be paid

    try:
        await wait(lambda: len(leaders()) == 1, 15, "no single leader")
        first = leaders()[0]
        await mine_block_and_wait_paid(apps["a"], 1)  # found through node a, paid by the leader
        assert leaders() == [first]
        ledger = apps["b"].ledger
        assert ledger.query("SELECT COUNT(DISTINCT batch), COUNT(*) FROM payments") == [(1, 1)]
        assert {a: v for a, v in ledger.run_sync(ledger_book.balances).items() if v} == {}

        await apps[first].stop()  # the payer goes away: the other takes over
        other = "b" if first == "a" else "a"
        del apps[first]
        await wait(lambda: leaders() == [other], 15, "no takeover")
        await mine_block_and_wait_paid(apps[other], 2)
        ledger = apps[other].ledger
        assert ledger.query("SELECT COUNT(DISTINCT batch), COUNT(*) FROM payments") == [(2, 2)]
        assert {a: v for a, v in ledger.run_sync(ledger_book.balances).items() if v} == {}
        txids = await payout_txids() - earlier
        assert len(txids) == 2 and {t for (t,) in ledger.query("SELECT txid FROM payments")} == txids
        await arpc(regtest, "generatetoaddress", 1, sink)
        credited = ledger.query("SELECT SUM(amount) FROM credits WHERE address=? AND status='payable'", (payee,))
        received = btc_to_sats(await arpc(regtest, "getreceivedbyaddress", payee, 1, wallet="payees"))
        assert received == credited[0][0] > 0
    finally:
        for m in miners:
            await m.close()
        for app in apps.values():
            await app.stop()
