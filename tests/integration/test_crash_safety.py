"""Crash safety of the ledger and the payments, on both ledger backends (SQLite and PostgreSQL): ``kill -9``
during a share flood loses no acknowledged share, and a crash right after ``sendmany`` never pays anyone
twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pool.app import PoolApp
from pool.ledger import book
from pool.ledger.pg import open_reader
from pool.node.payouts import COMMENT_PREFIX, InjectedCrash, PaymentProcessor
from pool.node.regtest import free_port
from tests.conftest import pool_config
from tests.support.chain import arpc, bits_target, connect_miner, display_hash, share_target, solve_where
from tests.support.payout_check import btc_to_sats, mine_share

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARE_DIFF = 1e-11


# ---- kill -9 during a share flood ------------------------------------------------------------------------------


def write_config(path: Path, node, data_dir: Path, port: int, pool_address: str, ledger_url: str = "") -> None:
    ledger = f'[ledger]\nurl = "{ledger_url}"\n' if ledger_url else ""
    path.write_text(f"""
data_dir = "{data_dir}"
{ledger}
[node]
rpc_url = "{node.rpc_url}"
rpc_user = "{node.user}"
rpc_password = "{node.password}"
network = "regtest"
zmq_hashblock = "{node.zmq_endpoint}"
refresh_interval = 30

[stratum]
host = "127.0.0.1"
port = {port}
submit_rate = 1000000.0
submit_burst = 10000000.0

[difficulty]
start = {SHARE_DIFF}
min = 1e-12
max = 1e6

[payout]
scheme = "pplns"
pool_address = "{pool_address}"

[metrics]
enabled = false

[logging]
level = "warning"
format = "json"
""")


async def start_pool(config: Path, log: Path, timeout: float = 60) -> asyncio.subprocess.Process:
    with open(log, "ab") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pool", "run", "--config", str(config),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL, cwd=ROOT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no banner from `pool run`")
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            if not line:
                raise RuntimeError(f"`pool run` exited: {log.read_text()[-3000:]}")
            if b"listening" in line:
                return proc
    except BaseException:
        await stop_process(proc, signal.SIGKILL)
        raise


async def stop_process(proc: asyncio.subprocess.Process, sig: int) -> int | None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)
    return proc.returncode


async def test_kill9_during_share_flood_loses_no_acknowledged_share(fresh_regtest, tmp_path: Path, ledger_target):
    node = fresh_regtest
    pool_address = node.rpc("getnewaddress", wallet="pool")
    miner_address = node.rpc("getnewaddress", wallet="pool")
    port = free_port()
    config = tmp_path / "pool.toml"
    data_dir = tmp_path / "data"
    ledger_file = ledger_target() if ledger_target.is_pg else data_dir / "ledger.sqlite3"
    write_config(config, node, data_dir, port, pool_address, str(ledger_file) if ledger_target.is_pg else "")
    log = tmp_path / "pool.log"

    proc = await start_pool(config, log)
    miners = []
    acked: dict[str, tuple[str, str, str, str, str]] = {}  # share hash -> (worker, job, en2, ntime, nonce)
    blocks_acked: list[str] = []
    tasks: list[asyncio.Task] = []
    try:
        for i in range(10):
            miners.append(await connect_miner(port, f"{miner_address}.flood{i}", f"d={SHARE_DIFF}"))
        finder = await connect_miner(port, f"{miner_address}.finder", f"d={SHARE_DIFF}")
        miners.append(finder)
        stop = asyncio.Event()

        async def flood(miner, block_every: float | None) -> None:
            next_block = time.monotonic() + (block_every or 0)
            while not stop.is_set():
                job = miner.job
                net_t = bits_target(job.nbits)
                share_t = share_target(miner.job_difficulty.get(job.job_id, miner.difficulty))
                block = block_every is not None and time.monotonic() >= next_block
                if block:
                    next_block = time.monotonic() + block_every
                    lo, hi = -1, min(net_t, share_t)  # a block
                else:
                    lo, hi = net_t, share_t  # a share that is not a block
                en2, ntime, nonce, h = solve_where(miner, job, lambda v, lo=lo, hi=hi: lo < v <= hi)
                params = [miner.username, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
                try:
                    reply = await miner.request("mining.submit", params, timeout=10)
                except (ConnectionError, OSError, TimeoutError):
                    return
                if reply.get("result") is True:
                    acked[display_hash(h)] = (miner.username.partition(".")[2], *params[1:])
                    if block:
                        blocks_acked.append(display_hash(h))
                await asyncio.sleep(0)

        for m in miners[:-1]:
            for _ in range(3):  # a few submits in flight per connection
                tasks.append(asyncio.create_task(flood(m, None)))
        tasks.append(asyncio.create_task(flood(finder, 0.4)))

        await asyncio.sleep(3.0)
        acked_before_kill = len(acked)
        os.kill(proc.pid, signal.SIGKILL)  # mid-flood
        await asyncio.wait_for(proc.wait(), 10)
        stop.set()
        # Replies already on their way are still read; a connection reset (RST) leaves requests waiting, so
        # give the readers a moment and then cancel the rest (an unanswered share simply is not "acked").
        _, pending = await asyncio.wait(tasks, timeout=3)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert proc.returncode == -signal.SIGKILL
        assert acked_before_kill > 200, f"flood too slow to mean anything: {acked_before_kill} acks"

        conn = open_reader(ledger_file)
        try:
            rows = conn.execute("SELECT block_hash, worker, job_id FROM shares").fetchall()
            blocks = {r[0] for r in conn.execute("SELECT block_hash FROM blocks")}
        finally:
            conn.close()
        in_ledger = {h: (w, j) for h, w, j in rows}
        lost = [h for h in acked if h not in in_ledger]
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged shares missing from the ledger"
        for h, (worker, job_id, *_) in acked.items():
            assert in_ledger[h] == (worker, job_id)
        assert len(rows) == len(in_ledger), "a share recorded twice"
        assert set(blocks_acked) <= blocks
        print(f"\nkill -9: acked={len(acked)} (at kill {acked_before_kill}) ledger_rows={len(rows)} "
              f"blocks acked={len(blocks_acked)} in ledger={len(blocks)}")

        # The audit chain survived the kill, and every block balances.
        res = subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--config", str(config)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert res.returncode == 0, res.stdout + res.stderr

        # The pool restarts on the same ledger and keeps recording.
        for m in miners:
            await m.close()
        miners = []
        proc = await start_pool(config, log)
        m = await connect_miner(port, f"{miner_address}.after", f"d={SHARE_DIFF}")
        miners.append(m)
        share = await mine_share(m, node)
        conn = open_reader(ledger_file)
        try:
            assert conn.execute("SELECT COUNT(*) FROM shares").fetchone()[0] == len(rows) + 1
            assert conn.execute("SELECT worker FROM shares WHERE block_hash=?", (share,)).fetchone() == ("after",)
        finally:
            conn.close()
        assert await stop_process(proc, signal.SIGTERM) == 0, log.read_text()[-3000:]
    finally:
        for t in tasks:
            t.cancel()
        for m in miners:
            await m.close()
        await stop_process(proc, signal.SIGKILL)


# ---- a crash right after sendmany --------------------------------------------------------------------------


def payment_overrides(**payout: object) -> dict:
    return {
        "difficulty": {"start": SHARE_DIFF, "min": 1e-12, "max": 1e6},
        "payout": {
            "scheme": "pplns", "fee_percent": 1.0, "pplns_factor": 2.0, "maturity_check_interval": 3600,
            "payments_enabled": True, "payment_threshold_sats": 10_000, "payment_interval": 86400,
            "payment_grace": 3600, "wallet": "pool", **payout,
        },
    }


async def _mine_and_mature(app: PoolApp, node, miners: list, sink: str) -> str:
    for _ in range(3):
        for m in miners:
            await mine_share(m, node)
    h = await mine_share(miners[0], node, block=True)
    await arpc(node, "generatetoaddress", 101, sink)
    assert (h, "confirmed") in await app.maturity.check_once()
    return h


async def _received(node, addresses: list[str]) -> dict[str, int]:
    return {a: btc_to_sats(await arpc(node, "getreceivedbyaddress", a, 0, wallet="payees")) for a in addresses}


async def _payout_txs(node, earlier: frozenset[str] = frozenset()) -> list[dict]:
    """The wallet's payout sends, less those of ``earlier`` txids (the module's node serves both backends)."""
    txs = await arpc(node, "listtransactions", "*", 10_000, 0, True, wallet="pool")
    return [t for t in txs if t.get("category") == "send" and str(t.get("comment", "")).startswith(COMMENT_PREFIX)
            and t.get("txid") not in earlier]


def _balances(app: PoolApp) -> dict[str, int]:
    return {a: v for a, v in app.ledger.run_sync(book.balances).items() if v}


async def test_crash_after_sendmany_never_pays_twice(regtest, tmp_path: Path, ledger_target):
    node = regtest
    if "payees" not in node.rpc("listwallets"):
        node.rpc("createwallet", "payees")
    addresses = [await arpc(node, "getnewaddress", wallet="payees") for _ in range(2)]
    sink = await arpc(node, "getnewaddress", wallet="pool")
    earlier = frozenset(t["txid"] for t in await _payout_txs(node))
    ledger = {"url": str(ledger_target())} if ledger_target.is_pg else {}
    app = PoolApp(pool_config(node, tmp_path / "pool", ledger=ledger, **payment_overrides()))
    await app.start()
    miners = []
    try:
        for i, a in enumerate(addresses):
            miners.append(await connect_miner(app.server.port, f"{a}.w{i}", f"d={SHARE_DIFF}"))
        await _mine_and_mature(app, node, miners, sink)
        owed = _balances(app)
        assert set(owed) == set(addresses)

        # Round 1 crashes right after sendmany: the rows stay 'sending', the wallet has the transaction.
        app.payments.crash_after_send = True
        with pytest.raises(InjectedCrash) as crash:
            await app.payments.pay_once()
        batch = crash.value.args[0]
        rows = app.ledger.query("SELECT address, amount, status, txid FROM payments WHERE batch=?", (batch,))
        assert {a: v for a, v, _, _ in rows} == owed and {(s, t) for *_, s, t in rows} == {("sending", None)}
        assert _balances(app) == {}  # 'sending' already counts as paid
        txs = await _payout_txs(node, earlier)
        assert {t["comment"] for t in txs} == {COMMENT_PREFIX + batch}
        txid = txs[0]["txid"]

        # A new processor (the restarted pool) reconciles: found by its comment, marked sent.
        fresh = PaymentProcessor(app.wallet, app.ledger, 10_000, 86400, 3600)
        assert await fresh.reconcile() == 1
        rows = app.ledger.query("SELECT status, txid FROM payments WHERE batch=?", (batch,))
        assert set(rows) == {("sent", txid)}
        assert await fresh.pay_once() is None  # nothing more is due
        await arpc(node, "generatetoaddress", 1, sink)
        assert await _received(node, addresses) == owed
        assert len(await _payout_txs(node, earlier)) == len(owed)  # one tx: a 'send' entry per payee

        # Round 2: crash again; this time the same processor, no longer crashing, settles it inside pay_once.
        await _mine_and_mature(app, node, miners, sink)
        owed2 = _balances(app)
        assert set(owed2) == set(addresses)
        with pytest.raises(InjectedCrash) as crash:
            await app.payments.pay_once()
        batch2 = crash.value.args[0]
        app.payments.crash_after_send = False
        assert await app.payments.pay_once() is None
        assert {r[0] for r in app.ledger.query("SELECT status FROM payments WHERE batch=?", (batch2,))} == {"sent"}
        assert await app.payments.pay_once() is None
        await arpc(node, "generatetoaddress", 1, sink)
        got = await _received(node, addresses)
        assert got == {a: owed[a] + owed2[a] for a in addresses}
        assert len({t["txid"] for t in await _payout_txs(node, earlier)}) == 2
        assert _balances(app) == {}

        # A crash *before* sendmany (rows 'sending', nothing in the wallet): after the grace period the batch
        # fails, the balance is payable again and paid once.
        await _mine_and_mature(app, node, miners, sink)
        owed3 = _balances(app)
        app.ledger.run_sync(lambda c: book.create_payments(c, "neversent", 10_000))
        assert _balances(app) == {}
        impatient = PaymentProcessor(app.wallet, app.ledger, 10_000, 86400, grace=0)
        await asyncio.sleep(0.01)
        txid3 = await impatient.pay_once()
        assert txid3
        assert {r[0] for r in app.ledger.query("SELECT status FROM payments WHERE batch='neversent'")} == {"failed"}
        await arpc(node, "generatetoaddress", 1, sink)
        got3 = await _received(node, addresses)
        assert got3 == {a: got[a] + owed3[a] for a in addresses}
        assert await impatient.pay_once() is None
        res = subprocess.run([sys.executable, "-m", "pool", "audit", "verify", "--ledger", str(app.ledger.url or app.ledger.path)],
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert res.returncode == 0, res.stdout + res.stderr
    finally:
        for m in miners:
            await m.close()
        await app.stop()
