"""Operations against a real regtest bitcoind: /metrics moves with mining, the JSON API answers, logs are JSON.

The metrics are scraped over HTTP and parsed with prometheus_client's own parser, as Prometheus would read
them; the logging test runs the real ``pool run`` CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pool.node.regtest import free_port
from tests.support.chain import ready_miner
from tests.support.miner import NotifyJob
from tests.support.miner import TestMiner as StratumMiner

pytestmark = pytest.mark.integration

ERR_DUPLICATE = 22
ERR_BAD_EXTRANONCE2 = 20
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---- helpers ------------------------------------------------------------------------------------------


async def arpc(node: Any, method: str, *params: object, wallet: str | None = None) -> Any:
    return await asyncio.to_thread(node.rpc, method, *params, wallet=wallet)


async def scrape(port: int) -> Samples:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``; 0 when there are none yet."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= lbls)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {lbls: v for (n, lbls), v in samples.items() if n == name}


async def wait_for(check: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll the async ``check`` until it returns something truthy; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def stratum_prevhash(block_hash: str) -> str:
    internal = bytes.fromhex(block_hash)[::-1]
    return b"".join(internal[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


def bits_target(nbits_hex: str) -> int:
    bits = int(nbits_hex, 16)
    return (bits & 0x7FFFFF) << (8 * ((bits >> 24) - 3))


async def job_on_tip(node: Any, miner: StratumMiner, timeout: float = 15.0) -> NotifyJob:
    """The miner's newest job, once it builds on bitcoind's current tip."""

    async def current() -> NotifyJob | None:
        want = stratum_prevhash(await arpc(node, "getbestblockhash"))
        job = miner.job
        return job if job is not None and job.prevhash == want else None

    return await wait_for(current, timeout, "a job on the current tip", interval=0.02)


async def mine_block(node: Any, miner: StratumMiner) -> str:
    """Mine one share that is also a block (``mine_one(1e-8)``: on regtest nearly every share is); its hash."""
    await job_on_tip(node, miner)
    for _ in range(5):
        job = await miner.wait_job()
        reply, h = await miner.mine_one(1e-8)
        assert reply.get("result") is True, reply
        if int.from_bytes(h, "little") <= bits_target(job.nbits):
            return await wait_tip(node, h[::-1].hex())
    raise AssertionError("five accepted shares at difficulty 1e-8 and none was a regtest block")


async def wait_tip(node: Any, block_hash: str, timeout: float = 15.0) -> str:
    async def at_tip() -> bool:
        return await arpc(node, "getbestblockhash") == block_hash

    await wait_for(at_tip, timeout, f"block {block_hash} to become the tip")
    return block_hash


def solve_non_block(miner: StratumMiner, job: NotifyJob) -> tuple[bytes, int, int]:
    """A share whose hash misses the network target (accepted at the miner's tiny fixed difficulty, no new tip)."""
    network = bits_target(job.nbits)
    miner._en2_counter += 1
    en2 = miner._en2_counter.to_bytes(miner.extranonce2_size, "big")
    ntime = int(job.ntime, 16)
    base = miner.header_for(job, en2, ntime, 0)[:76]
    for nonce in range(100_000):
        if int.from_bytes(dsha(base + struct.pack("<I", nonce)), "little") > network:
            return en2, ntime, nonce
    raise AssertionError("no non-block nonce found")


async def connect(port: int, username: str, password: str = "d=1e-10") -> StratumMiner:
    # A fixed tiny difficulty (d=) keeps vardiff from raising it between the shares below, and lets a share
    # that misses the network target be accepted (for the duplicate check) without moving the tip.
    return await ready_miner(StratumMiner("127.0.0.1", port, username, password))


# ---- /metrics -----------------------------------------------------------------------------------------


async def test_metrics_move_with_mining(regtest, pool_app):
    app = pool_app
    assert app.http is not None and app.http.port > 0
    port = app.http.port
    before = await scrape(port)
    assert value(before, "pool_connections") == 0
    for name in ("pool_event_loop_lag_seconds_bucket", "process_cpu_seconds_total", "python_info",
                 "pool_template_age_seconds", "pool_hashrate_hashes_per_second"):
        assert series(before, name), f"{name} missing from /metrics"

    address = await arpc(regtest, "getnewaddress", wallet="pool")
    worker = f"{address}.w1"
    miner = await connect(app.server.port, worker)
    try:
        connected = await scrape(port)
        assert value(connected, "pool_connections") == 1
        assert value(connected, "pool_connects_total") >= value(before, "pool_connects_total") + 1
        assert value(connected, "pool_subscribes_total") >= 1
        assert value(connected, "pool_authorizes_total", result="ok") >= 1

        async def session_counted() -> bool:  # the housekeeping loop recounts sessions every few seconds
            return value(await scrape(port), "pool_sessions", state="authorized") == 1

        await wait_for(session_counted, 12, 'pool_sessions{state="authorized"} == 1', interval=0.5)

        blocks = [await mine_block(regtest, miner) for _ in range(2)]

        job = await job_on_tip(regtest, miner)
        en2, ntime, nonce = solve_non_block(miner, job)
        first = await miner.submit(job, en2, ntime, nonce)
        assert first.get("result") is True, first
        dup = await miner.submit(job, en2, ntime, nonce)
        assert dup.get("error") and dup["error"][0] == ERR_DUPLICATE, dup
        short_en2 = bytes(miner.extranonce2_size - 1)
        bad = await miner.submit(job, short_en2, ntime, nonce)
        assert bad.get("error") and bad["error"][0] == ERR_BAD_EXTRANONCE2, bad

        async def blocks_accepted() -> Samples | None:
            s = await scrape(port)
            done = value(s, "pool_blocks_total", stage="accepted") - value(before, "pool_blocks_total", stage="accepted")
            return s if done >= len(blocks) else None

        after = await wait_for(blocks_accepted, 20, "pool_blocks_total{stage=accepted} to count the blocks")

        def moved(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert moved("pool_shares_total", result="accepted") >= len(blocks) + 1
        assert moved("pool_shares_total", result="rejected") >= 2
        assert moved("pool_share_rejects_total", reason="duplicate") == 1
        assert moved("pool_share_rejects_total", reason="bad-extranonce2-length") == 1
        assert moved("pool_blocks_total", stage="found") == len(blocks)
        assert moved("pool_blocks_total", stage="accepted") == len(blocks)
        assert moved("pool_blocks_total", stage="rejected") == 0
        assert moved("pool_accepted_difficulty_total") > 0
        assert moved("pool_block_share_to_submit_seconds_count") == len(blocks)
        assert moved("pool_new_tip_notify_seconds_count") >= len(blocks)
        assert moved("pool_bitcoind_rpc_seconds_count", method="submitblock") >= len(blocks)
        assert moved("pool_ledger_commit_seconds_count") >= 1
        assert value(after, "pool_connections") == 1
        assert value(after, "pool_bitcoind_up") == 1
        height = await arpc(regtest, "getblockcount")
        assert value(after, "pool_template_height") == height + 1
        assert value(after, "pool_template_age_seconds") < 60
        assert value(after, "pool_network_difficulty") > 0
        assert value(after, "pool_hashrate_hashes_per_second") > 0
        assert value(after, "pool_workers_active") == 1
        hashrates = series(after, "pool_worker_hashrate_hashes_per_second")
        assert frozenset({("worker", worker)}) in hashrates, hashrates
        assert hashrates[frozenset({("worker", worker)})] > 0
        ages = series(after, "pool_worker_last_share_age_seconds")
        assert 0 <= ages[frozenset({("worker", worker)})] < 60
    finally:
        await miner.close()

    async def disconnected() -> bool:
        return value(await scrape(port), "pool_connections") == 0

    await wait_for(disconnected, 10, "pool_connections to drop to 0")


async def test_metrics_follow_prometheus_conventions(pool_app):
    """Exposition that Prometheus accepts: counters as *_total, histograms with +Inf buckets, no NaN gauges."""
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        async with http.get(f"http://127.0.0.1:{pool_app.http.port}/metrics") as resp:
            text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    pool_families = {n: f for n, f in families.items() if n.startswith("pool_")}
    assert len(pool_families) >= 25
    for name, family in pool_families.items():
        assert family.documentation, name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "histogram":
            infs = [s for s in family.samples if s.name.endswith("_bucket") and s.labels.get("le") == "+Inf"]
            counts = [s for s in family.samples if s.name.endswith("_count")]
            assert len(infs) == len(counts), name
        for s in family.samples:
            assert s.value == s.value, f"NaN in {s.name}"  # NaN != NaN


# ---- JSON API -----------------------------------------------------------------------------------------


async def test_http_api_endpoints(regtest, pool_app):
    app = pool_app
    base = f"http://127.0.0.1:{app.http.port}"
    address = await arpc(regtest, "getnewaddress", wallet="pool")
    stranger = await arpc(regtest, "getnewaddress", wallet="pool")  # valid, never mined
    miner = await connect(app.server.port, f"{address}.w1")
    try:
        found = [await mine_block(regtest, miner) for _ in range(2)]
        async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:

            async def get(path: str) -> tuple[int, Any]:
                async with http.get(base + path) as resp:
                    assert resp.content_type == "application/json", (path, resp.content_type)
                    return resp.status, await resp.json()

            status, body = await get("/healthz")
            assert status == 200 and body["status"] == "ok"

            status, body = await get("/readyz")
            assert status == 200, body
            assert body["ready"] is True and body["problems"] == []

            async def pool_at_tip() -> dict[str, Any] | None:
                # The pool moves to the new tip asynchronously (ZMQ / long poll); under load that takes a moment.
                _, body = await get("/api/pool")
                return body if body["height"] == await arpc(regtest, "getblockcount") + 1 else None

            await wait_for(pool_at_tip, 20, "/api/pool to report the template on the current tip")
            status, body = await get("/api/pool")
            assert status == 200
            assert body["hashrate"] > 0
            assert body["blocks_found"] >= len(found)
            assert body["height"] == await arpc(regtest, "getblockcount") + 1
            assert body["network"] == "regtest"
            assert body["miners"] == 1 and body["workers"] == 1
            assert body["last_block"]["hash"] == found[-1]
            assert body["uptime_seconds"] > 0

            status, body = await get(f"/api/address/{address}")
            assert status == 200, body
            assert body["address"] == address and body["known"] is True
            assert body["hashrate"] > 0
            workers = {w["worker"]: w for w in body["workers"]}
            assert "w1" in workers, body
            assert workers["w1"]["accepted"] >= len(found)
            assert any(s["worker"] == "w1" and s["count"] >= len(found) for s in body["shares"]), body

            status, body = await get(f"/api/address/{stranger}")
            assert status == 404, body
            assert body["known"] is False

            status, body = await get("/api/address/" + "x" * 101)
            assert status == 400

            status, body = await get("/api/blocks?limit=notanumber")
            assert status == 400

            async def blocks_listed() -> dict[str, dict[str, Any]] | None:
                _, body = await get("/api/blocks")
                by_hash = {b["hash"]: b for b in body["blocks"]}
                return by_hash if all(h in by_hash for h in found) else None

            by_hash = await wait_for(blocks_listed, 20, "/api/blocks to list the found blocks")
            for block_hash in found:
                block = by_hash[block_hash]
                # in the chain but not yet mature: pending (confirmed comes at maturity, rejected/orphaned never here)
                assert block["status"] in ("pending", "confirmed"), block
                header = await arpc(regtest, "getblockheader", block_hash)
                assert block["height"] == header["height"]
                assert block["address"] == address and block["worker"] == "w1"
                assert block["reward"] > 0 and block["found_at"] > 0

            status, body = await get("/api/blocks?limit=1")
            assert status == 200 and len(body["blocks"]) == 1
            assert body["blocks"][0]["hash"] == found[-1]
    finally:
        await miner.close()


# ---- logs ---------------------------------------------------------------------------------------------


def _pool_command() -> list[str]:
    script = Path(sys.executable).parent / "pool"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pool"]


def _kill_leftover_bitcoind(data_dir: Path) -> None:
    """If the pool died without stopping its bitcoind child, stop that child (by its own pid file)."""
    pid_file = data_dir / "regtest-node" / "regtest" / "bitcoind.pid"
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)


async def test_cli_logs_are_json_with_session_context(tmp_path, bitcoind_dir):
    data_dir = tmp_path / "data"
    stderr_path = tmp_path / "stderr.log"
    stratum_port = free_port()
    env = dict(os.environ, POOL_BITCOIND_DIR=str(bitcoind_dir))
    with open(stderr_path, "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            *_pool_command(), "run", "--data-dir", str(data_dir), "--port", str(stratum_port), "--metrics-port", "0",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env,
        )
    stdout_lines: list[str] = []
    try:
        assert proc.stdout is not None
        address = None
        deadline = time.monotonic() + 120
        while address is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no banner with an address; stdout: {stdout_lines}")
            line = await asyncio.wait_for(proc.stdout.readline(), remaining)
            if not line:
                raise AssertionError(
                    f"pool exited ({await proc.wait()}) before its banner; stderr: {stderr_path.read_text()[-3000:]}"
                )
            stdout_lines.append(line.decode())
            m = re.search(r"bcrt1[0-9a-z]+", line.decode())
            if m:
                address = m.group(0)
        assert any(f"127.0.0.1:{stratum_port}" in line for line in stdout_lines), stdout_lines

        miner = StratumMiner("127.0.0.1", stratum_port, f"{address}.w1", "x", user_agent="ops-test/1.0")
        await asyncio.wait_for(miner.connect(), 10)
        try:
            await asyncio.wait_for(miner.handshake(), 10)
            await miner.wait_job(10)
        finally:
            await miner.close()

        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 30)
        assert rc == 0, stderr_path.read_text()[-3000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 10)
            _kill_leftover_bitcoind(data_dir)
        with contextlib.suppress(Exception):
            rest = await asyncio.wait_for(proc.stdout.read(), 5) if proc.stdout else b""
            stdout_lines.extend(rest.decode().splitlines())

    lines = [line for line in stderr_path.read_text().splitlines() if line.strip()]
    assert lines, "the pool logged nothing"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"stderr line is not JSON: {line!r}")
        assert isinstance(record, dict), line
        for key in ("event", "level", "timestamp"):
            assert key in record, (key, line)
        assert record["level"] in ("debug", "info", "warning", "error", "critical", "exception"), line
        assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", record["timestamp"]), line
        records.append(record)
    for line in lines + stdout_lines:
        lowered = line.lower()
        assert "rpcpassword" not in lowered, line
        assert 'password":' not in lowered, line
    events = [r["event"] for r in records]
    assert "regtest_bitcoind_started" in events and "stratum_listening" in events, events
    authorized = [r for r in records if r["event"] == "authorized"]
    assert len(authorized) == 1, events
    record = authorized[0]
    for key in ("session", "peer", "worker"):
        assert key in record, (key, record)
    assert record["worker"] == f"{address}.w1"
    assert record["peer"].startswith("127.0.0.1:")
    assert record.get("agent") == "ops-test/1.0"
