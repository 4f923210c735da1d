"""Stratum submit throughput: answered ``mining.submit``/s and reply latency of the real pool vs a line echo server.

Why: every share a miner sends is parsed, judged and answered on the pool's single event loop, so answered
submits/s per process bounds how much hashrate (at a given share rate) one pool process can serve. This runs
a regtest bitcoind and an in-process ``PoolApp`` (uvloop, like ``pool run``), and drives it from one client
process with K connections (K = 1, 10, 100), each keeping N submits in flight (pipelined), in three modes:

* echo: the baseline, measured in the same run with the same client: a minimal uvloop line server on the
  same loop that answers every line with a fixed ``{"id":0,"result":true,"error":null}``. pool/echo is the
  share of the I/O-only ceiling the pool reaches, i.e. the pool's per-share overhead.
* reject: every submit duplicates one share the connection had accepted: full parse, job lookup, duplicate
  check and an error reply -- no hashing and no ledger write.
* accept: fresh valid shares (the same job, a random extranonce2 per connection, increasing nonces): parse,
  share check (double SHA-256 of header and coinbase), vardiff, stats and an acknowledge-after-commit ledger
  write per share. The difficulty is fixed (``d=`` password) below the regtest network difficulty, so every
  hash is a share; the client skips the nonces whose hash would also meet the network target (on regtest
  about half of all hashes are blocks), so no share is a block, no ``submitblock`` runs and the job never
  goes stale. The run checks that afterwards (no block found, chain height unchanged).

Shares are precomputed before each timed window (the client's hashing is not timed); replies are matched to
requests in order (the pool answers a connection's requests in order). Counted: replies arriving in the
window after a short warm-up; latency: request write to reply read, for requests sent in that window.
The CPU columns (100% = one core) say which side was saturated: "server" is the process running the pool (all
its threads) or the echo server, "client" the client process; both share the machine with bitcoind.

What this set-up does not show: regtest's template is empty, so costs that grow with the template's
transactions do not appear (``BlockTemplate.total_fees``, summed twice per accepted share, is ~45 us/share on
mainnet block 413567's 1,556 transactions), and N = 8 in flight per connection amortizes reads and writes
that a miner sending one share at a time pays per share. ``bench/stratum_load.py`` runs ``pool run`` against a
mainnet-like node with one share in flight per miner (``--only compare`` measures both effects).

Usage: ``python bench/stratum_throughput.py [--seconds 3] [--inflight 8] [--clients 1,10,100] [--check]``.
Exits 0 unless ``--check`` is given and a sanity check fails (an answer other than the mode's expected one,
a request never answered, a block found, ledger rows not matching the acknowledged shares). The figures
themselves have no pass mark: the ratios are for reading and for comparing runs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "bench"))

from loadgen import percentile, run_loop  # noqa: E402  (shared with stratum_load)

MODES = ("echo", "reject", "accept")
SHARE_DIFFICULTY = 1e-10  # below regtest's network difficulty (~4.66e-10): every hash is a share
ECHO_REPLY = b'{"id":0,"result":true,"error":null}\n'
HANDSHAKE_TIMEOUT = 30.0
DRAIN_TIMEOUT = 15.0
PRECOMPUTE_TOTAL = 131_072  # shares precomputed per run, split over the connections
GENERATE_CHUNK = 512  # more shares, when a connection runs out inside the window


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


# ---- client (runs in a child process so the pool keeps its own core) ---------------------------------------


class ShareMaker:
    """Submit lines for one job and one connection, skipping nonces whose hash would be a block."""

    def __init__(self, job: list[Any], extranonce1: bytes, extranonce2: bytes, username: str) -> None:
        job_id, prevhash, coinb1, coinb2, branch, version, nbits, ntime = job[:8]
        root = dsha(bytes.fromhex(coinb1) + extranonce1 + extranonce2 + bytes.fromhex(coinb2))
        for h in branch:
            root = dsha(root + bytes.fromhex(h))
        ph = bytes.fromhex(prevhash)
        prev = b"".join(ph[i : i + 4][::-1] for i in range(0, 32, 4))
        bits = int(nbits, 16)
        base = struct.pack("<I", int(version, 16)) + prev + root + struct.pack("<II", int(ntime, 16), bits)
        self.midstate = hashlib.sha256(base[:64])
        self.tail = base[64:76]
        self.network_target = (bits & 0xFFFFFF) << (8 * ((bits >> 24) - 3))
        params = json.dumps([username, job_id, extranonce2.hex(), ntime], separators=(",", ":"))
        self.prefix = b'"method":"mining.submit","params":' + params[:-1].encode() + b',"'
        self.nonce = 0
        self.skipped_blocks = 0

    def make(self, count: int) -> list[bytes]:
        """``count`` line bodies (everything after ``{"id":N,``) with fresh, non-block nonces."""
        out: list[bytes] = []
        sha256, mid, tail, target, prefix = hashlib.sha256, self.midstate, self.tail, self.network_target, self.prefix
        nonce = self.nonce
        while len(out) < count:
            if nonce > 0xFFFFFFFF:
                raise RuntimeError("nonce space exhausted")
            h1 = mid.copy()
            h1.update(tail + nonce.to_bytes(4, "little"))
            if int.from_bytes(sha256(h1.digest()).digest(), "little") <= target:
                self.skipped_blocks += 1
            else:
                out.append(prefix + b'%08x"]}\n' % nonce)
            nonce += 1
        self.nonce = nonce
        return out


class Conn(asyncio.Protocol):
    """One pipelined client connection: a JSON handshake, then a byte-level fast path matching replies FIFO."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.fast = False
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()
        self.sent: collections.deque[float] = collections.deque()
        self.bodies: list[bytes] = []
        self.cursor = 0
        self.cycle = False  # echo: reuse the precomputed lines; accept: every share must be fresh
        self.maker: ShareMaker | None = None
        self.seq = 100
        self.sending = False
        self.latencies: list[float] = []
        self.counted = 0
        self.ok = 0
        self.err = 0
        self.errors: collections.Counter[bytes] = collections.Counter()
        self.generated_in_window = 0

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 1 :]
        if not self.fast:
            for line in buf[:end].split(b"\n"):
                if line.strip():
                    self.messages.put_nowait(json.loads(line))
            return
        now = time.perf_counter()
        run = self.run
        answered = 0
        sent = self.sent
        for line in buf[:end].split(b"\n"):
            if b'"method"' in line:  # notifications and server requests (client.get_version)
                continue
            answered += 1
            t_sent = sent.popleft() if sent else now
            if b'"result":true' in line:
                self.ok += 1
            else:
                self.err += 1
                i = line.find(b'"error":')
                self.errors[line[i : i + 48] if i >= 0 else line[:48]] += 1
            if run.warm_at <= now <= run.end_at:
                self.counted += 1
                if t_sent >= run.warm_at:
                    self.latencies.append(now - t_sent)
        if not answered:
            return
        if now < run.end_at:
            self.send(answered, now)
        elif not sent and not self.done.done():
            self.done.set_result(None)

    # -- sending
    def next_bodies(self, count: int) -> list[bytes]:
        bodies, cursor = self.bodies, self.cursor
        if cursor + count > len(bodies):
            if self.cycle:
                if count > len(bodies):
                    raise RuntimeError("fewer precomputed lines than requests in flight")
                cursor = 0
            else:
                assert self.maker is not None
                del bodies[:cursor]
                cursor = 0
                extra = self.maker.make(max(GENERATE_CHUNK, count))
                self.generated_in_window += len(extra)
                bodies.extend(extra)
        self.cursor = cursor + count
        return bodies[cursor : cursor + count]

    def send(self, count: int, now: float) -> None:
        assert self.transport is not None
        seq = self.seq
        lines = [b'{"id":%d,%b' % (seq + i, body) for i, body in enumerate(self.next_bodies(count))]
        self.seq = seq + count
        self.sent.extend([now] * count)
        self.transport.write(b"".join(lines))

    async def request(self, req_id: int, method: str, params: list[Any]) -> dict[str, Any]:
        """Send one request and read messages until its reply; notifications seen meanwhile are kept."""
        assert self.transport is not None
        self.transport.write(json.dumps({"id": req_id, "method": method, "params": params}).encode() + b"\n")
        while True:
            msg = await self.messages.get()
            self.run.seen.append((self, msg))
            if msg.get("id") == req_id and "method" not in msg:
                return msg


class Run:
    """Shared clock of one timed window."""

    def __init__(self) -> None:
        self.warm_at = float("inf")
        self.end_at = float("inf")
        self.seen: list[tuple[Conn, dict[str, Any]]] = []


async def pool_handshake(conn: Conn, username: str) -> list[Any]:
    """subscribe + authorize with a fixed difficulty; returns the job params of the first ``mining.notify``."""
    reply = await conn.request(1, "mining.subscribe", ["stratum-bench/1.0"])
    extranonce1 = bytes.fromhex(reply["result"][1])
    en2_size = int(reply["result"][2])
    reply = await conn.request(2, "mining.authorize", [username, f"d={SHARE_DIFFICULTY!r}"])
    if reply.get("result") is not True:
        raise RuntimeError(f"authorize refused: {reply}")
    difficulty = None
    while True:
        for c, msg in conn.run.seen:
            if c is conn and msg.get("method") == "mining.set_difficulty":
                difficulty = float(msg["params"][0])
            if c is conn and msg.get("method") == "mining.notify":
                if difficulty is not None and difficulty != SHARE_DIFFICULTY:
                    raise RuntimeError(f"pool sent difficulty {difficulty}, wanted {SHARE_DIFFICULTY}")
                return [msg["params"], extranonce1, en2_size]
        msg = await conn.messages.get()
        conn.run.seen.append((conn, msg))


async def client_main(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    mode, clients, inflight, seconds = spec["mode"], spec["clients"], spec["inflight"], spec["seconds"]
    run = Run()
    conns: list[Conn] = []
    per_conn = max(4 * inflight, min(4096, PRECOMPUTE_TOTAL // clients))
    try:
        for _ in range(clients):
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Conn(run), "127.0.0.1", spec["port"]), HANDSHAKE_TIMEOUT
            )
            conns.append(conn)

        async def prepare(conn: Conn) -> None:
            if mode == "echo":  # same line shapes and the same hashing as accept, for a job nobody checks
                fake = ["1", "00" * 32, "01" * 60, "02" * 50, ["03" * 32] * 8, "20000000", "207fffff",
                        f"{int(time.time()):08x}"]
                conn.maker = ShareMaker(fake, os.urandom(4), os.urandom(8), spec["username"])
                conn.bodies = conn.maker.make(per_conn)
                conn.cycle = True
                return
            job, extranonce1, en2_size = await asyncio.wait_for(
                pool_handshake(conn, spec["username"]), HANDSHAKE_TIMEOUT
            )
            conn.maker = ShareMaker(job, extranonce1, os.urandom(en2_size), spec["username"])
            if mode == "reject":  # one accepted share, then only duplicates of it
                first = conn.maker.make(1)[0]
                assert conn.transport is not None
                conn.transport.write(b'{"id":3,' + first)
                while True:
                    reply = await asyncio.wait_for(conn.messages.get(), HANDSHAKE_TIMEOUT)
                    if reply.get("id") == 3 and "method" not in reply:
                        break
                if reply.get("result") is not True:
                    raise RuntimeError(f"first share not accepted: {reply}")
                conn.bodies = [first] * max(inflight, 1)
                conn.cycle = True
            else:
                conn.bodies = conn.maker.make(per_conn)

        await asyncio.gather(*(prepare(c) for c in conns))
        for conn in conns:
            conn.fast = True
            conn.buf = b""
        start = time.perf_counter() + 0.01
        warm = min(0.5, 0.1 * seconds)
        run.warm_at = start + warm
        run.end_at = start + warm + seconds
        wall_warm = time.time() + (run.warm_at - time.perf_counter())
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        now = time.perf_counter()
        for conn in conns:
            conn.send(inflight, now)
        await asyncio.sleep(max(0.0, run.warm_at - time.perf_counter()))
        cpu_warm = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, run.end_at - time.perf_counter()))
        cpu_end = resource.getrusage(resource.RUSAGE_SELF)
        wall_end = time.time()
        # Drain: requests still in flight get their replies (not counted), bounded in time.
        await asyncio.wait([c.done for c in conns], timeout=DRAIN_TIMEOUT)
        undrained = sum(len(c.sent) for c in conns)
    finally:
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()
        if conns:
            await asyncio.wait([c.closed for c in conns], timeout=5)
    latencies = sorted(x for c in conns for x in c.latencies)
    errors: collections.Counter[bytes] = collections.Counter()
    for c in conns:
        errors.update(c.errors)
    cpu = (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_warm.ru_utime + cpu_warm.ru_stime)
    return {
        "rate": sum(c.counted for c in conns) / seconds,
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "ok": sum(c.ok for c in conns),
        "err": sum(c.err for c in conns),
        "errors": [[k.decode(errors="replace"), v] for k, v in errors.most_common(3)],
        "client_cpu": cpu / seconds,
        "window": [wall_warm, wall_end],
        "undrained": undrained,
        "generated_in_window": sum(c.generated_in_window for c in conns),
        "skipped_blocks": sum(c.maker.skipped_blocks for c in conns if c.maker is not None),
        "first_accepted": clients if mode == "reject" else 0,
    }


def client_child(spec_json: str) -> int:
    result = run_loop(client_main(json.loads(spec_json)))
    print(json.dumps(result))
    return 0


# ---- server side -------------------------------------------------------------------------------------------


async def echo_server() -> asyncio.base_events.Server:
    """The baseline: one fixed JSON reply per received line, one write per read, on the same loop type."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                n = data.count(b"\n")
                if n:
                    writer.write(ECHO_REPLY * n)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    return await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)


class CpuSampler:
    """This process's CPU time (all threads: loop, ledger writer, executors) sampled against wall time."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append((time.time(), time.process_time()))
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def usage(self, t0: float, t1: float) -> float:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return float("nan")
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def pool_config(node: Any, data_dir: Path, pool_address: str, refresh: float) -> Any:
    """Like tests/conftest.py's pool_config, with the per-connection limits out of the way of a flood."""
    from pool.config import parse_config

    raw: dict[str, Any] = {
        "data_dir": str(data_dir),
        "node": {
            "rpc_url": node.rpc_url,
            "rpc_user": node.user,
            "rpc_password": node.password,
            "network": "regtest",
            "zmq_hashblock": node.zmq_endpoint,
            "refresh_interval": refresh,
        },
        "stratum": {
            "host": "127.0.0.1",
            "port": 0,
            "pool_tag": "/pool-bench/",
            "submit_rate": 1e6,
            "submit_burst": 1e7,
            "invalid_share_limit": 1_000_000,
            "connect_rate_per_ip": 1e6,
            "connect_burst_per_ip": 1e7,
        },
        "difficulty": {"start": SHARE_DIFFICULTY, "min": 1e-12, "max": 1e6, "target_share_interval": 10},
        "payout": {"scheme": "pplns", "pool_address": pool_address},
        "metrics": {"enabled": False},
        "logging": {"level": "warning", "format": "json"},
    }
    return parse_config(raw, env={})


async def drive(port: int, mode: str, clients: int, args: argparse.Namespace, username: str) -> dict[str, Any]:
    spec = {"port": port, "mode": mode, "clients": clients, "inflight": args.inflight, "seconds": args.seconds,
            "username": username}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), "--client-child", json.dumps(spec),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), args.seconds + HANDSHAKE_TIMEOUT + DRAIN_TIMEOUT + 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"client ({mode}, K={clients}) exited {proc.returncode}: {err.decode()[-800:]}")
    return json.loads(out.decode().strip().splitlines()[-1])


async def wait_sessions_gone(app: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while app.server.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def bench(args: argparse.Namespace, holder: dict[str, Any]) -> int:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from pool.app import PoolApp
    from pool.node.regtest import RegtestNode, find_bitcoind_dir
    from pool.ops.telemetry import configure_logging

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM cancels like Ctrl-C does, so bitcoind and the clients get stopped
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    tmp = Path(holder["tmp"])
    configure_logging("warning", "json")
    node = RegtestNode(tmp / "node", find_bitcoind_dir())
    holder["node"] = node
    await loop.run_in_executor(None, node.start)
    await loop.run_in_executor(None, node.ensure_wallet, "pool")
    pool_address = str(await loop.run_in_executor(None, lambda: node.rpc("getnewaddress", wallet="pool")))
    miner_address = str(await loop.run_in_executor(None, lambda: node.rpc("getnewaddress", wallet="pool")))
    height0 = await loop.run_in_executor(None, lambda: node.rpc("getblockcount"))
    app = PoolApp(pool_config(node, tmp / "pool", pool_address, args.refresh))
    echo = None
    sampler = CpuSampler()
    results: dict[tuple[int, str], dict[str, Any]] = {}
    blocks = -1
    problems: list[str] = []
    try:
        await app.start()
        echo = await echo_server()
        echo_port = int(echo.sockets[0].getsockname()[1])
        sampler.start()
        print(f"stratum throughput benchmark: {args.seconds:g}s per run, N={args.inflight} in flight per "
              f"connection, pool on uvloop in-process (regtest height {height0}, share difficulty "
              f"{SHARE_DIFFICULTY:g}), one client process, {os.cpu_count()} CPUs")
        username = f"{miner_address}.bench"
        for k in args.clients:
            for mode in MODES:
                rows0 = app.ledger.query("SELECT COUNT(*) FROM shares")[0][0] if mode != "echo" else 0
                port = echo_port if mode == "echo" else app.server.port
                r = await drive(port, mode, k, args, username)
                r["server_cpu"] = sampler.usage(*r["window"])
                if mode != "echo":
                    await wait_sessions_gone(app)
                    await asyncio.sleep(0.05)
                    rows = app.ledger.query("SELECT COUNT(*) FROM shares")[0][0] - rows0
                    expected_rows = r["ok"] + r["first_accepted"]
                    if rows != expected_rows:
                        problems.append(f"K={k} {mode}: {expected_rows} shares acknowledged, {rows} ledger rows")
                    r["ledger_rows"] = rows
                if mode == "reject" and (r["ok"] or not r["err"]):
                    problems.append(f"K={k} reject: {r['ok']} submits accepted, expected only duplicates")
                if mode == "reject" and r["errors"] and "uplicate" not in r["errors"][0][0]:
                    problems.append(f"K={k} reject: unexpected errors {r['errors']}")
                if mode == "accept" and r["err"]:
                    problems.append(f"K={k} accept: {r['err']} rejected: {r['errors']}")
                if r["undrained"]:
                    problems.append(f"K={k} {mode}: {r['undrained']} requests never answered")
                results[(k, mode)] = r
        height1 = await loop.run_in_executor(None, lambda: node.rpc("getblockcount"))
        blocks = app.coordinator.blocks_found
        if blocks or height1 != height0:
            problems.append(f"blocks found: {app.coordinator.blocks_found}, height {height0} -> {height1}")
    finally:
        await sampler.stop()
        if echo is not None:
            echo.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(echo.wait_closed(), 5)
        await app.stop()
        await loop.run_in_executor(None, node.stop)

    print(f"{'K':>4} {'mode':<7}{'replies/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs echo':>9}{'answered true':>15}"
          f"{'server cpu':>11}{'client cpu':>11}")
    for k in args.clients:
        base = results[(k, "echo")]["rate"]
        for mode in MODES:
            r = results[(k, mode)]
            total = r["ok"] + r["err"]
            ok = f"{r['ok'] / total:.1%}" if total else "-"
            cpu = f"{r['server_cpu']:.0%}"
            print(f"{k:>4} {mode:<7}{r['rate']:>11,.0f}{r['p50'] * 1000:>9.2f}{r['p99'] * 1000:>9.2f}"
                  f"{r['rate'] / base if base else float('nan'):>8.3f}x{ok:>15}{cpu:>11}{r['client_cpu']:>11.0%}")
    extra = sum(results[(k, "accept")]["generated_in_window"] for k in args.clients)
    if extra:
        print(f"note: the accept client hashed {extra} more shares inside the timed windows (precomputed ran out)")
    skipped = sum(results[(k, m)]["skipped_blocks"] for k in args.clients for m in ("reject", "accept"))
    made = sum(results[(k, m)]["ok"] + results[(k, m)]["first_accepted"] for k in args.clients
               for m in ("reject", "accept"))
    print(f"blocks avoided: while precomputing, the client dropped {skipped:,} nonces whose hash met the regtest "
          f"network target; the pool accepted {made:,} shares and found {blocks} blocks")
    reject_errors = results[(args.clients[-1], "reject")]["errors"]
    if reject_errors:
        print(f"reject replies: {reject_errors[0][0]}... x{reject_errors[0][1]}")
    for p in problems:
        print(f"PROBLEM: {p}")
    passed = not problems
    print(f"sanity (expected answers, all answered, no blocks, ledger rows = acks): {'PASS' if passed else 'FAIL'}")
    return 1 if (args.check and not passed) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed window per run (9 runs; default 3)")
    parser.add_argument("--inflight", type=int, default=8, help="submits in flight per connection (default 8)")
    parser.add_argument("--clients", default="1,10,100", help="connection counts K (default 1,10,100)")
    parser.add_argument("--refresh", type=float, default=110.0,
                        help="pool's template refresh interval in seconds (default 110, the maximum)")
    parser.add_argument("--check", action="store_true", help="exit 1 if a sanity check fails")
    parser.add_argument("--client-child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_child:
        return args
    try:
        args.clients = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        parser.error("--clients must be comma-separated integers")
    if not args.clients or not all(1 <= k <= 1000 for k in args.clients):
        parser.error("--clients must be between 1 and 1000")
    if not 0 < args.seconds <= 300 or not 1 <= args.inflight <= 1000:
        parser.error("--seconds must be in (0, 300] and --inflight in [1, 1000]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client_child:
        return client_child(args.client_child)
    holder: dict[str, Any] = {"tmp": tempfile.mkdtemp(prefix="stratum-bench-")}
    try:
        return run_loop(bench(args, holder))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        node = holder.get("node")
        if node is not None:
            node.stop()  # idempotent; covers an interrupted loop
        shutil.rmtree(holder["tmp"], ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
