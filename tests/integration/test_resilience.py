"""The pool survives bitcoind going away and coming back, and mining resumes; connections keep their deadlines,
socket options and in-order replies under load."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.conftest import pool_config
from tests.support import live
from tests.support.chain import (
    arpc,
    connect_miner,
    mine_block_on,
    solve_where,
    wait_job_on,
    wait_tip,
    wait_until,
)

pytestmark = pytest.mark.integration


async def test_bitcoind_restart_mid_run(fresh_regtest, tmp_path: Path):
    from pool.app import PoolApp

    node = fresh_regtest
    app = PoolApp(await asyncio.to_thread(pool_config, node, tmp_path / "pool"))
    await app.start()
    miners: list = []
    try:
        user = f"{await arpc(node, 'getnewaddress', wallet='pool')}.w1"
        miner = await connect_miner(app.server.port, user)
        miners.append(miner)
        tip = await arpc(node, "getbestblockhash")
        reply, first_block, _ = await mine_block_on(miner, tip)
        assert reply.get("result") is True, reply
        await wait_tip(node, first_block, timeout=10)
        await wait_job_on(miner, first_block, timeout=10, clean=True)

        # ---- outage -----------------------------------------------------------------------------------------
        await asyncio.to_thread(node.stop)
        await asyncio.sleep(3)
        assert all(not s.task.done() for s in app.supervisor.tasks.values()), app.supervisor.tasks
        assert not [s for s in app.supervisor.tasks.values() if s.failures], app.supervisor.tasks

        # Stratum still accepts a new miner, answers subscribe and hands out the last work it had.
        late = await connect_miner(app.server.port, user.replace(".w1", ".w2"))
        miners.append(late)
        assert late.job is not None

        # A share (a block, at this difficulty) submitted during the outage gets an answer, not a hang.
        started = time.monotonic()
        reply, outage_block, _ = await asyncio.wait_for(mine_block_on(miner, first_block, timeout=5), 10)
        assert time.monotonic() - started < 5
        assert reply.get("result") is True, reply  # valid work; the ledger is local, so it is credited

        # ---- back ---------------------------------------------------------------------------------------------
        await asyncio.to_thread(node.start)
        assert await arpc(node, "getbestblockhash") in (first_block, outage_block)
        # The block found during the outage was written to disk and is submitted once bitcoind answers again.
        await wait_tip(node, outage_block, timeout=30)
        await wait_until(lambda: app.source.healthy, 30, what="pool sees bitcoind again")
        tip = await arpc(node, "getbestblockhash")

        for m in (miner, late):
            reply, block_hash, _ = await mine_block_on(m, tip, timeout=30)
            assert reply.get("result") is True, reply
            await wait_tip(node, block_hash, timeout=15)
            tip = block_hash
        # Every found block ends up confirmed on disk, none left pending.
        blocks_dir = tmp_path / "pool" / "blocks"
        await wait_until(lambda: not list(blocks_dir.glob("*.pending.hex")), 15, what="no pending block files")
        assert len(list(blocks_dir.glob("*.confirmed.hex"))) == 4
    finally:
        for m in miners:
            await m.close()
        await app.stop()


async def test_health_reports_bitcoind_down_promptly(fresh_regtest, tmp_path: Path):
    from pool.app import PoolApp

    node = fresh_regtest
    app = PoolApp(await asyncio.to_thread(pool_config, node, tmp_path / "pool"))
    await app.start()
    try:
        # Past the start-up fetches (start, then the refresh loop's first): only the outage can flip the flag.
        started_fetch = app.source.fetched_at
        await wait_until(lambda: app.source.fetched_at > started_fetch, 10, what="refresh loop's first fetch")
        await asyncio.sleep(0.5)
        assert app.source.healthy is True
        await asyncio.to_thread(node.stop)
        await wait_until(lambda: app.source.healthy is False, 5, what="pool to notice bitcoind is down")
        await asyncio.to_thread(node.start)
        await wait_until(lambda: app.source.healthy is True, 20, what="pool to notice bitcoind is back")
    finally:
        await app.stop()


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_handshake_deadlines_close_silent_connections(regtest, tmp_path):
    """One sweep enforces every connection's deadline (no timer per connection): a client that never subscribes,
    and one that subscribes but never logs in, are closed with their reason, while a miner carries on."""
    from pool.app import PoolApp

    cfg = await asyncio.to_thread(pool_config, regtest, tmp_path / "pool",
                                  stratum={"subscribe_timeout": 1, "authorize_timeout": 2})
    app = PoolApp(cfg)
    await app.start()
    miner = None
    try:
        def closed(reason: str) -> float:
            return live.metric_now(app, "pool_disconnects_total", {"reason": reason}) or 0.0

        silent_r, silent_w = await asyncio.open_connection("127.0.0.1", app.server.port)
        shy_r, shy_w = await asyncio.open_connection("127.0.0.1", app.server.port)
        shy_w.write(b'{"id": 1, "method": "mining.subscribe", "params": []}\n')
        await shy_w.drain()
        assert b'"id":1' in await asyncio.wait_for(shy_r.readline(), 5)
        miner = await connect_miner(app.server.port, f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w")
        await wait_until(lambda: closed("subscribe-timeout") == 1, 5, what="the silent client to be closed")
        assert await asyncio.wait_for(silent_r.read(), 5) == b""
        await wait_until(lambda: closed("authorize-timeout") == 1, 5, what="the subscribed client to be closed")
        assert await asyncio.wait_for(shy_r.read(), 5) == b""
        reply, _ = await miner.mine_one()
        assert reply.get("result") is True or reply["error"][0] == 21, reply
        assert len(app.server.sessions) == 1
        for w in (silent_w, shy_w):
            w.close()
    finally:
        if miner is not None:
            await miner.close()
        await app.stop()


@pytest.mark.one_process("reads the one process's sessions (app.server.sessions)")
async def test_accepted_sockets_have_keepalive_and_no_delay(regtest, pool_app):
    """Set once on the listening socket and inherited by every accepted one (no per-connection syscalls)."""
    import socket

    miner = await connect_miner(pool_app.server.port, f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.ka")
    try:
        (session,) = pool_app.server.sessions.values()
        sock = session.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        await miner.close()


@pytest.mark.one_process("patches the one process's sessions to watch reading pause")
async def test_many_shares_in_flight_pause_reading_and_answer_in_order(regtest, pool_app, monkeypatch):
    """Accepted shares are answered at their commit, several in flight per connection; past the cap the
    connection's reading pauses until replies are settled, then resumes. Replies keep the request order."""
    from pool.server import server as server_module

    monkeypatch.setattr(server_module, "MAX_SHARES_IN_FLIGHT", 2)
    paused_after_read: list[bool] = []
    real_receive = server_module.StratumServer._receive

    def receive(self, session, data):  # noqa: ANN001, ANN202
        real_receive(self, session, data)
        paused_after_read.append(session.paused)

    monkeypatch.setattr(server_module.StratumServer, "_receive", receive)
    miner = await connect_miner(pool_app.server.port, f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.fl",
                                password="d=1e-10")
    try:
        job = await wait_job_on(miner, await arpc(regtest, "getbestblockhash"))
        network = int(job.nbits[2:], 16) << (8 * (int(job.nbits[:2], 16) - 3))
        lines = []
        for i in range(12):
            en2, ntime, nonce, _ = solve_where(miner, job, lambda v: v > network)  # shares, not blocks
            params = [miner.username, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
            lines.append(json.dumps({"id": 1000 + i, "method": "mining.submit", "params": params}).encode())
        assert miner.writer is not None
        miner.writer.write(b"\n".join(lines) + b"\n")  # one write: all twelve judged before any commit
        await miner.writer.drain()
        await wait_until(lambda: all(1000 + i in miner.replies for i in range(12)), 10, what="twelve replies")
        assert [miner.replies[1000 + i]["result"] for i in range(12)] == [True] * 12
        assert [k for k in miner.replies if isinstance(k, int) and k >= 1000] == list(range(1000, 1012))  # in order
        assert True in paused_after_read  # twelve in flight > 2: reading paused until they were settled
        (session,) = pool_app.server.sessions.values()
        assert session.paused is False and session.protocol.deferred == 0
        reply, _ = await miner.mine_one(1e-10)  # reading resumed: the connection still works
        assert reply.get("result") is True or reply["error"][0] == 21, reply
    finally:
        await miner.close()
