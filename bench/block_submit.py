"""Share → ``submitblock`` sent: how fast a found block leaves the pool while the pool is busy.

Why: every millisecond between the solving share and bitcoind receiving the block is a chance for a
competing block. The old path wrote and fsynced the block file on the default thread pool first, then sent
``submitblock`` through the RPC client shared with template and maturity calls; the new ``BlockSubmitter``
sends at once on a thread and connection reserved for it, with the file write in parallel on its own thread.

Both paths run in the same process, one after the other, under the same load:

* 1,000 simulated miners at 5,000 shares/s in total: each an asyncio task that, 5 times a second, parses and
  builds a Stratum submit line and records a share in the real SQLite ledger (group commit, fsync), awaiting
  its commit as a connection does before it answers;
* the shared RPC client (4 threads, as in the pool) refreshing templates every second (a ~200 KB answer)
  and running a maturity pass of 50 ``getblockheader`` calls every second;
* default-thread-pool work as the HTTP API, maturity queries and payments make it: a ledger read every
  20 ms, and every 2 s a burst of 8 jobs that each hold a thread for 200 ms (a read or payment waiting on a
  lock);
* a found block (1 MB, 2 MB of hex) every 100 ms.

"bitcoind" is a small JSON-RPC server in a separate process (so its work does not share the pool's GIL) that
notes when each ``submitblock`` request's headers arrived (CLOCK_MONOTONIC, the same clock as
``time.perf_counter`` in the pool process on Linux). Latency = arrival − the moment the share was judged a
block. The new path's own ``on_sent`` figure (what ``pool_block_share_to_submit_seconds`` records) is shown
too. The goal (issue 9): p99 ≤ 5 ms.

Usage: ``python bench/block_submit.py [--seconds 15] [--dir PATH]`` (two runs of ``--seconds`` each plus
about 5 s of set-up; keep the default under a minute). ``--dir`` puts the ledger and block files on another
filesystem (default: the system temporary directory; on tmpfs fsync is free and the baseline looks better).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
MINERS = 1000
SHARES_PER_SECOND = 5000
BLOCK_INTERVAL = 0.1
BLOCK_BYTES = 1_000_000
WARMUP = 1.0
SUBMIT_PREFIX = b'{"jsonrpc":"1.0","id":"submitblock","method":"submitblock","params":["'  # pool.node.rpc's


# ---- the fake bitcoind (separate process) ------------------------------------------------------------------


def serve(conn: Any) -> None:
    """JSON-RPC server: records submitblock arrivals by block marker; answers the rest plausibly."""
    arrivals: dict[str, float] = {}
    template = {"height": 1, "transactions": [{"data": "00" * 400, "txid": f"{i:064x}"} for i in range(250)]}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as bitcoind's server: an answer is not held back for an ACK

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            arrived = time.perf_counter()
            body = self.rfile.read(int(self.headers["Content-Length"]))
            result: Any = None
            req_id: Any = "submitblock"
            if body.startswith(SUBMIT_PREFIX):  # a block: note it without parsing megabytes of JSON
                arrivals.setdefault(body[len(SUBMIT_PREFIX):len(SUBMIT_PREFIX) + 16].decode(), arrived)
            else:
                req = json.loads(body)
                method, params, req_id = req["method"], req.get("params", []), req.get("id")
                if method == "getblockheader":
                    time.sleep(0.001)
                    result = {"hash": params[0], "confirmations": 1}
                elif method == "getblocktemplate":
                    time.sleep(0.005)
                    result = template
                elif method == "bench_arrivals":
                    result = arrivals
            out = json.dumps({"result": result, "error": None, "id": req_id}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn.recv()  # any message: stop
    server.shutdown()


# ---- load -----------------------------------------------------------------------------------------------------


def import_pool() -> dict[str, Any]:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return {name: importlib.import_module(f"pool.{name}") for name in ("ledger.sqlite", "node.blocks", "node.rpc")}


class Load:
    """Everything the pool does besides submitting blocks, started and stopped around each run."""

    def __init__(self, mods: dict[str, Any], ledger: Any, shared: Any) -> None:
        self.mods, self.ledger, self.shared = mods, ledger, shared
        self.shares = 0
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._miner(i)) for i in range(MINERS)]
        self.tasks += [asyncio.create_task(c) for c in (self._templates(), self._maturity(), self._reads(),
                                                         self._lock_waits())]

    async def close(self) -> None:
        self.stop.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _miner(self, i: int) -> None:
        record = self.mods["ledger.sqlite"].ShareRecord
        period = MINERS / SHARES_PER_SECOND
        await asyncio.sleep(random.random() * period)
        next_at = time.perf_counter()
        n = 0
        while not self.stop.is_set():
            n += 1
            line = json.dumps({"id": n, "method": "mining.submit",
                               "params": [f"bcrt1qminer{i}.w", "1a", f"{n:016x}", "65a1b2c3", f"{n:08x}"]})
            params = json.loads(line)["params"]
            await self.ledger.record_share(record(time.time(), params[0][:-2], "w", 1.0, 2.0, params[1], 100,
                                                  f"{i:08x}{n:056x}", False))
            self.shares += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    async def _templates(self) -> None:
        while not self.stop.is_set():
            await self.shared.call("getblocktemplate", {"rules": ["segwit"]})
            await asyncio.sleep(1.0)

    async def _maturity(self) -> None:
        while not self.stop.is_set():
            for b in range(50):
                await self.shared.call("getblockheader", f"{b:064x}")
            await asyncio.sleep(1.0)

    async def _reads(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            await loop.run_in_executor(None, self.ledger.query, "SELECT COUNT(*) FROM shares WHERE worker='w'")
            await asyncio.sleep(0.02)

    async def _lock_waits(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            await asyncio.sleep(2.0)
            await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.2) for _ in range(8)))


# ---- the two submission paths ----------------------------------------------------------------------------------


async def run_variant(variant: int, name: str, mods: dict[str, Any], url: str, seconds: float, tmp: Path,
                      payload: str) -> dict[str, Any]:
    rpc, blocks, sqlite = mods["node.rpc"], mods["node.blocks"], mods["ledger.sqlite"]
    creds = rpc.RpcCredentials(url, "bench", "bench")
    ledger = sqlite.Ledger(tmp / f"{name}.sqlite3")
    shared = rpc.NodeClient(creds, 30.0)
    reserved = rpc.NodeClient(creds, 30.0, workers=1, name="rpc-submit")
    blocks_dir = tmp / f"blocks-{name}"
    on_sent: dict[str, float] = {}
    submitter = blocks.BlockSubmitter(reserved, blocks_dir,
                                      on_sent=lambda b, s: on_sent.setdefault(b.block_hex[:16], s))
    loop = asyncio.get_running_loop()
    found: dict[str, float] = {}
    inflight: set[asyncio.Task[Any]] = set()

    def write_pending(block: Any) -> None:  # the old path's write: same bytes, same fsync
        path = blocks_dir / f"{block.block_hash}.pending.hex"
        with open(path, "w") as fh:
            fh.write(f"{block.worker}\n{block.reward}\n{block.block_hex}\n")
            fh.flush()
            os.fsync(fh.fileno())

    async def old_path(block: Any) -> None:
        await loop.run_in_executor(None, write_pending, block)
        await shared.call("submitblock", block.block_hex)

    load = Load(mods, ledger, shared)
    load.start()
    await asyncio.sleep(WARMUP)
    shares_before, started = load.shares, time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds:
        i += 1
        marker = f"{variant:02x}{i:014x}"  # unique per block and path: how the fake bitcoind tells them apart
        hex_block = marker + payload[16:]
        block = blocks.FoundBlock(100 + i, f"{i:064x}", hex_block, "bench.w", 50, time.time())
        found[marker] = block.found_clock
        task = asyncio.create_task(old_path(block)) if name == "baseline" else submitter.submit_soon(block)
        inflight.add(task)
        task.add_done_callback(inflight.discard)
        await asyncio.sleep(BLOCK_INTERVAL)
    elapsed = time.perf_counter() - started
    rate = (load.shares - shares_before) / elapsed
    if inflight:
        await asyncio.wait(list(inflight), timeout=30)
    await load.close()
    arrivals = await shared.call("bench_arrivals")
    await submitter.drain(5)
    for c in (shared, reserved):
        c.close()
    ledger.close()
    server_ms = sorted((float(arrivals[m]) - t) * 1000 for m, t in found.items() if m in arrivals)
    client_ms = sorted(s * 1000 for s in on_sent.values())
    return {"blocks": len(found), "received": len(server_ms), "rate": rate, "server": server_ms,
            "client": client_ms}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


async def bench(args: argparse.Namespace, url: str, tmp: Path) -> int:
    mods = import_pool()
    importlib.import_module("pool.ops.telemetry").configure_logging("warning", "console")
    payload = random.randbytes(BLOCK_BYTES).hex()
    results = {}
    for variant, name in enumerate(("baseline", "reserved")):
        results[name] = await run_variant(variant, name, mods, url, args.seconds, tmp, payload)
    print(f"{'path (latency from the solving share)':<46}{'blocks':>7}{'shares/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}")
    rows = [("baseline: request at bitcoind", "baseline", "server"),
            ("reserved: request at bitcoind", "reserved", "server"),
            ("reserved: whole request sent (the metric)", "reserved", "client")]
    for label, name, key in rows:
        r = results[name]
        v = r[key]
        print(f"{label:<46}{r['received']:>7}{r['rate']:>10,.0f}{pct(v, 0.5):>9.2f}{pct(v, 0.99):>9.2f}"
              f"{(v[-1] if v else float('nan')):>9.2f}")
    print("baseline = block file write+fsync on the default thread pool, then submitblock on the shared RPC client;")
    print("reserved = BlockSubmitter: submitblock at once on its own thread and connection, file write beside it")
    base99, new99 = pct(results["baseline"]["server"], 0.99), pct(results["reserved"]["server"], 0.99)
    print(f"p99 at bitcoind, baseline / reserved: {base99 / new99:.1f}x; goal p99 <= 5 ms: "
          f"{'met' if new99 <= 5 else 'NOT met'} ({new99:.2f} ms)")
    load = os.getloadavg()[0]
    print(f"load average (1 min) at the end: {load:.2f} on {os.cpu_count()} CPUs; tail latencies follow contention")
    lost = [n for n, r in results.items() if r["received"] != r["blocks"]]
    if lost:
        print(f"WARNING: blocks never reached the fake bitcoind in: {', '.join(lost)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per path")
    parser.add_argument("--dir", default=None, help="directory for the ledger and block files")
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            print(f"block submit benchmark: {MINERS} miners at {SHARES_PER_SECOND} shares/s, a 1 MB block every "
                  f"{BLOCK_INTERVAL * 1000:.0f} ms, {args.seconds:g} s per path, files in {tmp}")
            try:
                import uvloop
                runner = uvloop.run
            except ImportError:
                runner = asyncio.run
            return runner(bench(args, f"http://127.0.0.1:{port}", Path(tmp)))
    finally:
        parent.send("stop")
        server.join(5)
        if server.is_alive():
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
