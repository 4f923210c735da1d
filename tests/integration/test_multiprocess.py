"""stratum.processes = 2: two Stratum front-end processes on one port, one coordinator process, against a real
regtest bitcoind and real TCP on 127.0.0.1.

Which process a connection lands on is the kernel's choice (SO_REUSEPORT); the tests tell them apart by the
process bit of extranonce1 (``[node id: 8 bits][process: 1 bit][counter]`` with two processes) and connect
until both have miners.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import running_pool
from tests.support.chain import (
    arpc,
    bits_target,
    connect_miner,
    mine_block_on,
    share_target,
    solve_where,
    wait_tip,
    wait_until,
)
from tests.support.miner import NotifyJob, TestMiner

pytestmark = pytest.mark.integration

TWO = {"processes": 2}
# Every hash is a share and half of them are not blocks (see share_solution); vardiff may not raise it.
EASY = {"start": 1e-10, "max": 1e-10}
TOKEN = "test-admin-token-0123456789abcdef"
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


def process_of(extranonce1: bytes) -> int:
    """The front-end that handed out the value (4-byte extranonce1, node id 0, two processes)."""
    return (int.from_bytes(extranonce1, "big") >> 23) & 1


async def miners_on_both(port: int, user: str, per_process: int = 1, limit: int = 40) -> list[TestMiner]:
    """Connect until each of the two processes has ``per_process`` miners (bounded); extras are closed."""
    kept: list[TestMiner] = []
    counts = [0, 0]
    for _ in range(limit):
        miner = await connect_miner(port, user)
        index = process_of(miner.extranonce1)
        if counts[index] < per_process:
            counts[index] += 1
            kept.append(miner)
        else:
            await miner.close()
        if min(counts) >= per_process:
            return kept
    for miner in kept:
        await miner.close()
    raise AssertionError(f"connections landed on one process only: {counts}")


def share_solution(miner: TestMiner, job: NotifyJob) -> tuple[bytes, int, int, bytes]:
    """A share that is not a block (on regtest almost every hash is one): the tip does not move under it."""
    difficulty = miner.job_difficulty.get(job.job_id, miner.difficulty)
    low, high = bits_target(job.nbits), share_target(difficulty)
    return solve_where(miner, job, lambda v: low < v <= high)


async def mine_share(miner: TestMiner) -> tuple[dict[str, Any], str]:
    """Submit one share that is not a block; (reply, header hash as the ledger shows it)."""
    job = await miner.wait_job()
    en2, ntime, nonce, h = share_solution(miner, job)
    return await miner.submit(job, en2, ntime, nonce), h[::-1].hex()


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()


def sample(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def ledger_share_hashes(app: Any) -> set[str]:
    rows = await asyncio.to_thread(app.ledger.query, "SELECT block_hash FROM shares")
    return {r[0] for r in rows}


async def test_miners_on_both_processes_get_shares_committed_and_one_metrics(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY) as app:
        address = await arpc(regtest, "getnewaddress", wallet="pool")
        miners = await miners_on_both(app.server.port, f"{address}.w1", per_process=3)
        try:
            values = [m.extranonce1 for m in miners]
            assert len(set(values)) == len(values)
            assert {process_of(v) for v in values} == {0, 1}
            assert all(v[0] == 0 for v in values)  # node id 0 in the top byte
            hashes = []
            for miner in miners:
                for _ in range(3):
                    reply, h = await mine_share(miner)
                    assert reply["result"] is True, reply
                    hashes.append(h)
            # Every "true" is a committed row in the coordinator's ledger.
            assert set(hashes) <= await ledger_share_hashes(app)
            # A share refused by a front-end (an unknown job) is counted for its worker by the coordinator.
            job = miners[0].job
            assert job is not None
            params = [f"{address}.w1", "ffffff", "00" * miners[0].extranonce2_size, job.ntime, "00000000"]
            reply = await miners[0].request("mining.submit", params)
            assert reply["error"][0] == 21, reply

            async def merged() -> bool:
                _, text = await http_get(app.http.port, "/metrics")
                return (sample(text, 'pool_shares_total{result="accepted"}') == len(hashes)
                        and sample(text, 'pool_shares_total{result="rejected"}') == 1
                        and sample(text, "pool_connections") == len(miners)
                        and sample(text, 'pool_frontend_up{process="1"}') == 1)

            await wait_until(merged, 10, what="/metrics summing both processes")
            _, text = await http_get(app.http.port, "/metrics")
            assert text.count("# TYPE pool_shares_total counter") == 1
            assert sample(text, 'pool_sessions{state="authorized"}') == len(miners)
            status, body = await http_get(app.http.port, "/api/pool")
            summary = json.loads(body)
            assert status == 200 and summary["miners"] == len(miners) and summary["workers"] == 1
            status, body = await http_get(app.http.port, f"/api/address/{address}")
            workers = json.loads(body)["workers"]
            assert status == 200 and workers[0]["accepted"] == len(hashes) and workers[0]["rejected"] == 1
            # No [[site]]: every miner is 'unassigned' and counted there, as with one process.
            status, body = await http_get(app.http.port, "/api/sites")
            (unassigned,) = json.loads(body)["sites"]
            assert unassigned["name"] == "unassigned" and unassigned["miners"] == len(miners)
            assert unassigned["accepted"] == len(hashes) and unassigned["rejected"] == 1
        finally:
            for miner in miners:
                await miner.close()


async def test_block_found_through_a_front_end(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        miners = await miners_on_both(app.server.port, user)
        try:
            for miner in miners:  # one block through each process
                for _ in range(4):  # another test module's blocks can make one attempt stale
                    tip = await arpc(regtest, "getbestblockhash")
                    reply, block_hash, _ = await mine_block_on(miner, tip, timeout=15)
                    if reply.get("result") is True:
                        break
                    await asyncio.sleep(0.5)
                assert reply["result"] is True, reply
                await wait_tip(regtest, block_hash, timeout=10)
                rows = await asyncio.to_thread(app.ledger.query, "SELECT block_hash FROM blocks WHERE block_hash=?",
                                               (block_hash,))
                assert rows, "the block's row is in the ledger before its share is answered true"
            assert app.coordinator.blocks_found >= 2
            assert app.coordinator.last_block is not None
        finally:
            for miner in miners:
                await miner.close()


async def test_session_resume_lands_on_the_other_process(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        first = await connect_miner(app.server.port, user)
        previous = first.extranonce1
        owner = process_of(previous)
        first_job = await first.wait_job()
        en2, ntime, nonce, _ = share_solution(first, first_job)
        reply = await first.submit(first_job, en2, ntime, nonce)
        assert reply["result"] is True, reply
        credited = (en2, ntime, nonce)
        await first.close()
        await asyncio.sleep(0.5)  # the release reaches the other process through the coordinator
        resumed = None
        others: list[TestMiner] = []
        try:
            for _ in range(40):
                miner = TestMiner("127.0.0.1", app.server.port, user)
                await miner.connect()
                others.append(miner)
                reply = await miner.request("mining.subscribe", ["testminer/1.0", previous.hex()])
                value = bytes.fromhex(reply["result"][1])
                if value == previous:
                    resumed = miner
                    miner.extranonce1, miner.extranonce2_size = value, reply["result"][2]
                    break
                assert process_of(value) == owner, "the other process refused a value it was offered"
            assert resumed is not None, "no connection landed on the other process"
            # The owner's process saw the claim: a second miner asking for the same value gets a new one.
            await asyncio.sleep(0.5)
            for _ in range(10):
                again = TestMiner("127.0.0.1", app.server.port, user)
                await again.connect()
                others.append(again)
                reply = await again.request("mining.subscribe", ["testminer/1.0", previous.hex()])
                assert bytes.fromhex(reply["result"][1]) != previous
            reply = await resumed.request("mining.authorize", [user, "x"])
            assert reply["result"] is True
            job = await resumed.wait_job()
            assert job.coinb1 == first_job.coinb1 and job.prevhash == first_job.prevhash
            # The solution credited through the first process, sent again through the other under its own job
            # id: the same header, so the coordinator refuses it as a duplicate (no credit twice).
            reply = await resumed.submit(job, *credited)
            assert reply["error"][0] == 22, reply
            resumed._en2_counter = 1000  # its own range from here (it restarted at 1, the first miner's)
            reply, h = await mine_share(resumed)
            assert reply["result"] is True, reply
            assert h in await ledger_share_hashes(app)
        finally:
            for miner in others:
                await miner.close()


async def test_kill_a_front_end_under_load(regtest, tmp_path: Path):
    """kill -9 one front-end while miners on both submit: it is started again, every share that was answered
    true is in the ledger, and the other process's miners carry on."""
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        miners = await miners_on_both(app.server.port, user, per_process=3)
        accepted: list[str] = []
        after_kill: list[int] = []
        killed_at: list[float] = []
        stop = asyncio.Event()

        async def load(miner: TestMiner) -> None:
            deadline = time.monotonic() + 30
            while not stop.is_set() and time.monotonic() < deadline:
                job = miner.job
                assert job is not None
                en2, ntime, nonce, h = share_solution(miner, job)
                params = [user, job.job_id, en2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
                try:
                    reply = await miner.request("mining.submit", params, timeout=5)
                except (TimeoutError, ConnectionError, OSError):
                    return  # its process was killed
                if reply.get("result") is True:
                    accepted.append(h[::-1].hex())
                    if killed_at:
                        after_kill.append(process_of(miner.extranonce1))
                await asyncio.sleep(0.005)

        victim = app.server.slots[0]
        old_pid = victim.pid
        tasks = [asyncio.create_task(load(m)) for m in miners]
        try:
            await asyncio.sleep(1.5)
            os.kill(old_pid, signal.SIGKILL)
            killed_at.append(time.monotonic())
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            assert accepted, "no share was accepted under load"
            assert 1 in after_kill, "the other process's miners stopped getting shares accepted"
            await wait_until(lambda: victim.pid != old_pid and victim.link is not None, 30,
                             what="the killed front-end started again")
            assert set(accepted) <= await ledger_share_hashes(app), "a share answered true is missing"
            assert (app.metrics.registry.get_sample_value("pool_frontend_restarts_total", {"process": "0"})
                    or 0) >= 1
            # New miners are served by both processes again.
            more = await miners_on_both(app.server.port, user)
            for miner in more:
                reply, _ = await mine_share(miner)
                assert reply["result"] is True, reply
                await miner.close()
        finally:
            stop.set()
            for miner in miners:
                await miner.close()


async def test_coordinator_link_down_never_answers_true(regtest, tmp_path: Path):
    """A front-end that loses its link answers error 20 (never a false true), keeps its miners and reconnects."""
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        miners = await miners_on_both(app.server.port, user)
        try:
            miner = next(m for m in miners if process_of(m.extranonce1) == 0)
            slot = app.server.slots[0]
            assert slot.link is not None
            slot.link.close()
            job = miner.job
            assert job is not None
            en2, ntime, nonce, h = share_solution(miner, job)
            reply = await miner.submit(job, en2, ntime, nonce)
            if reply.get("result") is not True:
                assert reply["error"][0] == 20, reply
            else:  # it can only be true once the link is back and the share committed
                assert h[::-1].hex() in await ledger_share_hashes(app)
            await wait_until(lambda: slot.link is not None, 10, what="the front-end linked again")
            reply, h = await mine_share(miner)  # the same connection, still open
            assert reply["result"] is True, reply
            assert h in await ledger_share_hashes(app)
        finally:
            for miner in miners:
                await miner.close()


async def test_admin_reconnect_reaches_miners_of_every_process(regtest, tmp_path: Path):
    async with running_pool(regtest, tmp_path / "pool", stratum=TWO, difficulty=EASY,
                            admin={"token": TOKEN, "reconnect_allowlist": ["pool2.example.com"]}) as app:
        user = f"{await arpc(regtest, 'getnewaddress', wallet='pool')}.w1"
        miners = await miners_on_both(app.server.port, user, per_process=2)
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
                url = f"http://127.0.0.1:{app.http.port}/admin/reconnect?host=pool2.example.com&port=3334"
                async with http.post(url, headers=headers) as resp:
                    body = await resp.json()
                assert resp.status == 200 and body["sent"] == len(miners), body
                async with http.post(f"http://127.0.0.1:{app.http.port}/admin/version-mask?mask=00ffe000",
                                     headers=headers) as resp:
                    body = await resp.json()
                assert resp.status == 200, body

            def reconnected() -> int:
                return sum(any(n.get("method") == "client.reconnect" for n in m.notifications) for m in miners)

            await wait_until(lambda: reconnected() == len(miners), 5, what="client.reconnect to every miner")
        finally:
            for miner in miners:
                await miner.close()


async def test_tls_and_solo_on_two_processes(regtest, tmp_path: Path):
    """Both front-ends serve the TLS port too, and under SOLO each finder's coinbase pays its own address."""
    from tests.integration.test_tls import tls_miner
    from tests.support.chain import sats, subsidy
    from tests.support.tls import cert_fingerprint, client_context, make_cert

    cert, key = make_cert(tmp_path / "tls", "pool-a")
    stratum = {**TWO, "tls_port": 0, "tls_cert": str(cert), "tls_key": str(key)}
    async with running_pool(regtest, tmp_path / "pool", stratum=stratum, difficulty=EASY,
                            payout={"scheme": "solo", "fee_percent": 2.0}) as app:
        assert app.server.tls_port and app.server.tls_port != app.server.port
        kept: dict[int, Any] = {}
        try:
            for i in range(40):
                address = await arpc(regtest, "getnewaddress", wallet="pool")
                miner = await tls_miner(app.server.tls_port, f"{address}.rig{i}", client_context(cert))
                index = process_of(miner.extranonce1)
                if index in kept:
                    await miner.close()
                    continue
                kept[index] = (miner, address)
                if len(kept) == 2:
                    break
            assert set(kept) == {0, 1}, "TLS connections landed on one process only"
            for miner, address in kept.values():
                for _ in range(4):
                    tip = await arpc(regtest, "getbestblockhash")
                    reply, block_hash, _ = await mine_block_on(miner, tip, timeout=15)
                    if reply.get("result") is True:
                        break
                    await asyncio.sleep(0.5)
                assert reply["result"] is True, reply
                await wait_tip(regtest, block_hash)
                block = await arpc(regtest, "getblock", block_hash, 2)
                value = subsidy(block["height"]) + sum(sats(tx["fee"]) for tx in block["tx"][1:])
                spk = (await arpc(regtest, "getaddressinfo", address, wallet="pool"))["scriptPubKey"]
                outs = {o["scriptPubKey"]["hex"]: sats(o["value"]) for o in block["tx"][0]["vout"]}
                assert outs[spk] == value - value * 200 // 10_000, outs
            # SIGHUP's reload reaches both processes: new connections on either get the new certificate.
            new_cert, new_key = make_cert(tmp_path / "tls-new", "pool-b")
            shutil.copy(new_cert, cert)
            shutil.copy(new_key, key)
            assert app.server.reload_tls() is True
            trust_both = client_context(cert, new_cert)

            async def both_reloaded() -> bool:
                seen: dict[int, str] = {}
                for _ in range(20):
                    probe = await tls_miner(app.server.tls_port, f"{address}.probe", trust_both)
                    seen[process_of(probe.extranonce1)] = probe.peer_fingerprint
                    await probe.close()
                    if len(seen) == 2:
                        break
                return set(seen.values()) == {cert_fingerprint(new_cert)} and len(seen) == 2

            await wait_until(both_reloaded, 10, interval=0.2, what="the new certificate on both processes")
        finally:
            for miner, _ in kept.values():
                await miner.close()


async def _start_coordinator(config: Path, log: Path) -> tuple[asyncio.subprocess.Process, int]:
    """``pool run --config`` as an operator runs it; returns once its banner names the Stratum port."""
    import re
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pool", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=log.open("ab"), cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line:
            break
        match = re.search(r"Stratum listening on [\d.]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    proc.kill()
    await proc.wait()
    raise AssertionError(f"pool did not start: {log.read_text()[-2000:]}")


async def test_front_ends_survive_a_coordinator_crash(regtest, tmp_path: Path):
    """kill -9 of the coordinator: the front-ends keep their miners (shares meanwhile: error 20, never true),
    the next coordinator adopts them, and the same connections get shares committed again."""
    import socket
    import sqlite3

    from pool.server.frontends import STATE_FILE, run_dir

    with socket.socket() as probe, socket.socket() as probe2:
        probe.bind(("127.0.0.1", 0))
        probe2.bind(("127.0.0.1", 0))
        port, http_port = probe.getsockname()[1], probe2.getsockname()[1]
    data_dir = tmp_path / "pool"
    address = await arpc(regtest, "getnewaddress", wallet="pool")
    config = tmp_path / "pool.toml"
    config.write_text(
        f'data_dir = "{data_dir}"\n'
        f'[node]\nrpc_url = "{regtest.rpc_url}"\nrpc_user = "{regtest.user}"\nrpc_password = "{regtest.password}"\n'
        f'network = "regtest"\nzmq_hashblock = "{regtest.zmq_endpoint}"\n'
        f'[stratum]\nhost = "127.0.0.1"\nport = {port}\nprocesses = 2\n'
        f"[difficulty]\nstart = 1e-10\nmin = 1e-10\nmax = 1e-10\n"
        f'[payout]\nscheme = "pplns"\npool_address = "{address}"\n'
        f'[metrics]\nhost = "127.0.0.1"\nport = {http_port}\n[logging]\nlevel = "warning"\nformat = "json"\n'
        '[[site]]\nname = "lab"\ncidrs = ["127.0.0.1/32"]\npower_budget_kw = 1\nefficiency_j_per_th = 20\n'
    )
    log = tmp_path / "pool.log"
    state = run_dir(str(data_dir)) / STATE_FILE
    procs: list[asyncio.subprocess.Process] = []
    miners: list[TestMiner] = []
    try:
        first, got_port = await _start_coordinator(config, log)
        procs.append(first)
        assert got_port == port
        pids = json.loads(state.read_text())["pids"]
        miners = await miners_on_both(port, f"{address}.w1")
        for miner in miners:
            reply, _ = await mine_share(miner)
            assert reply["result"] is True, reply
        first.kill()
        await first.wait()
        for miner in miners:  # the link is down: error 20, and the connection stays
            reply, h = await mine_share(miner)
            assert reply.get("result") is not True and reply["error"][0] == 20, reply
        second, got_port = await _start_coordinator(config, log)
        procs.append(second)
        assert got_port == port
        assert json.loads(state.read_text())["pids"] == pids, "the front-ends were replaced, not adopted"
        hashes = []
        for miner in miners:  # the same connections as before the crash
            reply, h = await mine_share(miner)
            assert reply["result"] is True, reply
            hashes.append(h)
        ledger = sqlite3.connect(data_dir / "ledger.sqlite3")
        try:
            stored = {r[0] for r in ledger.execute("SELECT block_hash FROM shares")}
        finally:
            ledger.close()
        assert set(hashes) <= stored
        # The front-ends told the new coordinator of their live logins: its site book has the same miners.
        status, body = await http_get(http_port, "/api/sites")
        assert status == 200
        assert next(s for s in json.loads(body)["sites"] if s["name"] == "lab")["miners"] == len(miners)
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 40) == 0
        for pid in pids.values():
            assert not Path(f"/proc/{pid}/cmdline").exists() or b"frontend" not in Path(
                f"/proc/{pid}/cmdline").read_bytes(), "a front-end outlived the pool's shutdown"
    finally:
        for miner in miners:
            await miner.close()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if state.exists():
            for pid in json.loads(state.read_text())["pids"].values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
