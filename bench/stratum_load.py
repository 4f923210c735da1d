"""The pool under mainnet-like load: throughput, latency, new-tip fan-out and memory, each beside a baseline.

Why: per-share cost depends on the work the pool serves (a 1,556-transaction template, an 11-level merkle
branch, mainnet difficulty) and on how miners talk to it, so this runs ``pool run`` (uvloop) as a process of its
own against ``bench/mainnet_node.py`` (block 413567's template, ZMQ hashblock, a tip switch on demand), driven by
simulated miners in another process (``bench/loadgen.py``). Every figure is printed beside a baseline measured
in the same run with the same client process: a line-echo server that does no work per line (the load
generator's own ceiling). CPU is per process, 100% = one core: "pool" is all its threads, "loop" its main
(event-loop) thread alone, "client" the load generator, "base" the echo server; the node runs beside them.

Sections (``--only`` picks some; all by default):

* throughput: closed loop (each connection sends its next submit when a reply arrives; ``--inflight`` per
  connection), 100 and 1,000 connections; reject path (``d=1e6``: every share fully hashed, then low
  difficulty) and accept path (``d=1e-10``: every share accepted and committed to the ledger before ``true``).
* latency: open loop at a fixed submit rate (written on a 1 ms tick, timed from the write): 5,000/s over 1,000
  connections and 15,000/s over 100, reject and accept paths.
* tipload: open loop 3,000 accepted submits/s over 1,000 connections, with a new tip every few seconds and
  without: what template fetching, parsing and fan-out on the serving loop do to reply latency.
* hold: N logged-in idle connections (RSS delta / N, the echo server's beside it), then new tips through the
  node's ``benchnewtip`` (ZMQ hashblock + long poll): wall time from the announcement to the first and the last
  miner holding a ``mining.notify`` with the new prevhash; the baseline broadcasts a same-size line itself.
* compare: the accepted path on this template and on the same work without transactions (``--empty`` node),
  with 1 and 8 submits in flight per connection: what the regtest benchmark's set-up hid.
* profile: cProfile of the pool's event-loop thread over an accept window (``--profile-out`` keeps the stats).

At mainnet difficulty no share is a block (checked: ``submitblock`` never called). ``--quick`` finishes in
about 70 s; the full run takes about four minutes. Usage: ``python bench/stratum_load.py [--quick] [--only
throughput,latency,tipload,hold,compare,profile] [--seconds 3] [--hold 1000,5000,10000,19500]``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from loadgen import raise_nofile  # noqa: E402
from mainnet_node import MainnetNode  # noqa: E402

POOL_ADDRESS = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"  # a well-known mainnet P2WPKH address
ACCEPT_D, REJECT_D = 1e-10, 1e6
TICK = os.sysconf("SC_CLK_TCK")
SECTIONS = ("throughput", "latency", "tipload", "hold", "compare", "profile")


# ---- processes -------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """utime + stime of a process (all threads) or of one of its threads."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Cpu:
    """CPU of several processes over a window of wall time."""

    def __init__(self, pids: dict[str, tuple[int, int | None]]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.c0 = {k: cpu_seconds(*v) for k, v in pids.items()}

    def done(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {k: (cpu_seconds(*v) - self.c0[k]) / dt for k, v in self.pids.items()}


class Pool:
    """``pool run --config`` in a child process (uvloop, as operators run it), pointed at a mainnet-like node."""

    def __init__(self, node: MainnetNode, tmp: Path, name: str, profile: Path | None = None,
                 cache_fees: bool = False) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        info = node.info
        config = self.dir / "pool.toml"
        config.write_text(f"""data_dir = "{self.dir / 'data'}"
[node]
rpc_url = "{info['rpc_url']}"
rpc_user = "{info['user']}"
rpc_password = "{info['password']}"
network = "main"
zmq_hashblock = "{info['zmq']}"
refresh_interval = 110
[stratum]
host = "127.0.0.1"
port = 0
pool_tag = "/pool-bench/"
submit_rate = 1000000.0
submit_burst = 10000000.0
invalid_share_limit = 1000000
connect_rate_per_ip = 1000000.0
connect_burst_per_ip = 10000000.0
max_connections_per_ip = 10000000
[difficulty]
start = 1.0
min = 1e-12
max = 1e18
[payout]
scheme = "pplns"
pool_address = "{POOL_ADDRESS}"
[metrics]
enabled = false
[logging]
level = "warning"
format = "json"
""")
        env = dict(os.environ)
        if profile is not None:
            env["STRATUM_LOAD_PROFILE"] = str(profile)
        if cache_fees:
            env["STRATUM_LOAD_CACHE_FEES"] = "1"
        self.log = open(self.dir / "pool.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "stratum_load.py"), "--pool-child", str(config)],
                                     stdout=subprocess.PIPE, stderr=self.log, env=env, cwd=REPO_ROOT)
        self.port = 0
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            match = re.search(r"Stratum listening on [\d.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.stop()
            raise RuntimeError(f"pool did not start: {(self.dir / 'pool.log').read_text()[-1500:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def pool_child(config_path: str) -> int:
    """The pool process: the open-files limit raised to the hard limit, optional cProfile of the loop thread
    between SIGUSR1 and SIGUSR2, then exactly ``pool run --config``."""
    raise_nofile()
    sys.path.insert(0, str(REPO_ROOT))
    out = os.environ.get("STRATUM_LOAD_PROFILE")
    if out:
        import cProfile

        prof = cProfile.Profile()
        signal.signal(signal.SIGUSR1, lambda *_: prof.enable())

        def dump(*_: Any) -> None:
            prof.disable()
            prof.dump_stats(out)

        signal.signal(signal.SIGUSR2, dump)
    if os.environ.get("STRATUM_LOAD_CACHE_FEES"):
        _cache_total_fees()
    from pool.__main__ import main as pool_main

    return pool_main(["run", "--config", config_path])


def _cache_total_fees() -> None:
    """What-if for the compare section only: ``BlockTemplate.total_fees`` computed once per template instead of
    summed over every transaction on each call (the pool itself is not changed)."""
    from pool.mining.jobs import BlockTemplate

    cache: dict[int, tuple[Any, int]] = {}

    def total_fees(self: Any) -> int:
        entry = cache.get(id(self))
        if entry is None or entry[0] is not self:
            entry = cache[id(self)] = (self, sum(tx.fee for tx in self.transactions))
        return entry[1]

    BlockTemplate.total_fees = property(total_fees)  # type: ignore[method-assign,assignment]


class Echo:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "echo"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.port = int(json.loads(self.proc.stdout.readline())["port"])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc.stdout.close()


class Miners:
    """A load-generator process holding ``connections`` miners on ``port``."""

    def __init__(self, port: int, connections: int, difficulty: float | None, wait: bool = True) -> None:
        spec = {"port": port, "connections": connections, "login": difficulty is not None,
                "difficulty": difficulty or 0, "username": f"{POOL_ADDRESS}.bench"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "client", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        ready = self.read()
        if "ready" not in ready:
            self.stop()
            raise RuntimeError(f"load generator: {ready}")

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.wait()})")
        return dict(json.loads(line))

    def command(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None  # end of input: the client closes its connections and exits
                self.proc.stdin.close()
                self.proc.wait(20)
            except (subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Fleet:
    """``connections`` miners split over ``procs`` load-generator processes (a new-tip watch needs more than one
    client core at 10,000 connections: see the echo baseline's "last" column)."""

    def __init__(self, port: int, connections: int, difficulty: float | None, procs: int) -> None:
        sizes = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        self.parts = [Miners(port, size, difficulty, wait=False) for size in sizes if size]
        try:
            for part in self.parts:
                part.wait_ready()
        except Exception:
            self.stop()
            raise

    def command(self, **cmd: Any) -> dict[str, Any]:
        for part in self.parts:
            part.send(**cmd)
        replies = [part.read() for part in self.parts]
        if cmd["cmd"] != "report":
            return replies[0]
        firsts = [r["first"] for r in replies if r["first"] is not None]
        lasts = [r["last"] for r in replies if r["last"] is not None]
        return {"seen": sum(r["seen"] for r in replies), "of": sum(r["of"] for r in replies),
                "first": min(firsts) if firsts else None, "last": max(lasts) if lasts else None}

    def stop(self) -> None:
        for part in self.parts:
            part.stop()


# ---- measurements ----------------------------------------------------------------------------------------------


def window(port: int, server_pid: int, connections: int, difficulty: float | None, seconds: float,
           inflight: int = 1, rate: float = 0.0, node: MainnetNode | None = None,
           on_window: Any = None) -> dict[str, Any]:
    """One client process, one timed window; CPU of the server (and its loop thread), client and node."""
    miners = Miners(port, connections, difficulty)
    try:
        pids: dict[str, tuple[int, int | None]] = {"server": (server_pid, None), "loop": (server_pid, server_pid),
                                                   "client": (miners.pid, None)}
        if node is not None:
            pids["node"] = (node.pid, None)
        cpu = Cpu(pids)  # replaced at the window's start by the client's own report for the client column
        if on_window is not None:
            on_window("start")
        result = miners.command(cmd="run", seconds=seconds, inflight=inflight, rate=rate, warm=0.5)
        if on_window is not None:
            on_window("stop")
        usage = cpu.done()  # includes the 0.5 s warm-up; the client's figure is its own, for the window only
        result.update({k: v for k, v in usage.items() if k != "client"})
    finally:
        miners.stop()
    return result


def fmt_row(label: str, r: dict[str, Any], base: float | None, lat: bool = False) -> str:
    total = r["ok"] + r["err"]
    ok = f"{r['ok'] / total:.0%}" if total else "-"
    ratio = f"{r['rate'] / base:.2f}x" if base else "-"
    extra = f"{r['p50'] * 1e3:>8.2f}{r['p99'] * 1e3:>9.2f}" if lat else ""
    per_share = r["server"] / r["rate"] * 1e6 if r["rate"] else float("nan")
    return (f"  {label:<34}{r['rate']:>10,.0f}{ratio:>8}{extra}{ok:>6}{r['server']:>7.0%}{r['loop']:>6.0%}"
            f"{r['client_cpu']:>7.0%}{per_share:>9.1f}")


def header(lat: bool = False) -> str:
    extra = f"{'p50 ms':>8}{'p99 ms':>9}" if lat else ""
    return f"  {'':<34}{'replies/s':>10}{'vs base':>8}{extra}{'true':>6}{'srv':>7}{'loop':>6}{'client':>7}{'srv us/1':>9}"


def check(r: dict[str, Any], expect_ok: bool | None, problems: list[str], what: str) -> None:
    if r["undrained"]:
        problems.append(f"{what}: {r['undrained']} requests never answered")
    if expect_ok is True and r["err"]:
        problems.append(f"{what}: {r['err']} rejected ({r['first_error']})")
    if expect_ok is False and r["ok"]:
        problems.append(f"{what}: {r['ok']} accepted, expected low-difficulty rejects")


def throughput(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    pool, echo, node, problems = ctx["pool"], ctx["echo"], ctx["node"], ctx["problems"]
    print(f"\n== throughput: closed loop, {args.inflight} submit(s) in flight per connection, "
          f"{args.seconds:g} s windows (base = echo server)")
    print(header(lat=True))
    for k in args.connections:
        base = window(echo.port, echo.pid, k, None, args.seconds, args.inflight)
        rej = window(pool.port, pool.pid, k, REJECT_D, args.seconds, args.inflight, node=node)
        acc = window(pool.port, pool.pid, k, ACCEPT_D, args.seconds, args.inflight, node=node)
        check(rej, False, problems, f"throughput reject K={k}")
        check(acc, True, problems, f"throughput accept K={k}")
        print(fmt_row(f"{k} conns, echo baseline", base, None, lat=True))
        print(fmt_row(f"{k} conns, pool reject (low diff)", rej, base["rate"], lat=True))
        print(fmt_row(f"{k} conns, pool accept (ledger)", acc, base["rate"], lat=True))
        if rej["err"]:
            print(f"    reject reply: {rej['first_error'][:100]}")
        ctx.setdefault("table", []).extend([(f"throughput K={k} reject", rej), (f"throughput K={k} accept", acc),
                                            (f"throughput K={k} echo", base)])


def latency(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    pool, echo, node, problems = ctx["pool"], ctx["echo"], ctx["node"], ctx["problems"]
    print(f"\n== latency: open loop (requests fall due at the rate, written on a 1 ms tick, timed from the write), "
          f"{args.seconds:g} s windows (base = echo server); 'not held' = fewer replies/s than offered")
    print(header(lat=True))
    for rate, k in args.latency:
        base = window(echo.port, echo.pid, k, None, args.seconds, rate=rate)
        print(fmt_row(f"{rate:,}/s over {k}: echo", base, None, lat=True))
        for name, d in (("reject", REJECT_D), ("accept", ACCEPT_D)):
            r = window(pool.port, pool.pid, k, d, args.seconds, rate=rate, node=node)
            check(r, d == ACCEPT_D, problems, f"latency {name} {rate}/s K={k}")
            held = "" if r["rate"] >= 0.97 * rate else "  not held"
            print(fmt_row(f"{rate:,}/s over {k}: pool {name}", r, base["rate"], lat=True) + held)
            ctx.setdefault("table", []).append((f"latency {name} {rate}/s K={k}", r))


def tipload(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    """Reply latency under steady load with and without new tips arriving (template fetch, parse, fan-out)."""
    node, problems = ctx["node"], ctx["problems"]
    rate, k, seconds, every = 3000, 1000, args.tipload_seconds, args.tip_every
    print(f"\n== tipload: open loop {rate:,}/s over {k:,} connections, accept path, {seconds:g} s windows; a new tip "
          f"every {every:g} s vs none (miners switch to each new job; shares sent on the old one are stale)")
    print(f"  {'':<22}{'replies/s':>10}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>9}{'stale':>7}{'tips':>6}{'pool':>7}"
          f"{'loop':>6}")
    pool = Pool(node, ctx["tmp"], "tipload")
    try:
        for tips_on in (False, True):
            miners = Miners(pool.port, k, ACCEPT_D)
            try:
                cpu = Cpu({"pool": (pool.pid, None), "loop": (pool.pid, pool.pid)})
                miners.send(cmd="run", seconds=seconds, rate=rate, warm=0.5)
                start, tips = time.monotonic(), 0
                while tips_on and time.monotonic() - start + every < seconds + 0.5:
                    time.sleep(every)
                    node.new_tip()
                    tips += 1
                r = miners.read()
                usage = cpu.done()
            finally:
                miners.stop()
            check(r, True, problems, f"tipload tips={tips_on}")
            print(f"  {'with tips' if tips_on else 'no tips':<22}{r['rate']:>10,.0f}{r['p50'] * 1e3:>8.2f}"
                  f"{r['p99'] * 1e3:>9.2f}{r['max'] * 1e3:>9.1f}{r['stale']:>7}{tips:>6}{usage['pool']:>7.0%}"
                  f"{usage['loop']:>6.0%}")
    finally:
        pool.stop()


def hold(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    node, problems = ctx["node"], ctx["problems"]
    limit = raise_nofile()
    print(f"\n== hold: logged-in idle connections, RSS per connection, new tip -> miners notified "
          f"(open-files limit {limit}; {args.tips} tip(s) per size; {args.client_procs} client process(es))")
    print(f"  {'':<28}{'conns':>7}{'RSS delta':>11}{'per conn':>10}{'first ms':>10}{'last ms':>9}{'notified':>10}")
    for n in args.hold:
        if n > limit - 200:
            print(f"  {n} connections: skipped (open-files limit {limit})")
            continue
        # The baseline: a fresh echo server holding n connections and broadcasting one notify-sized line.
        echo = Echo()
        time.sleep(0.3)
        rss0 = rss_bytes(echo.pid)
        miners = Fleet(echo.port, n, None, args.client_procs)
        try:
            time.sleep(1.0)
            rss1 = rss_bytes(echo.pid)
            import socket

            for _ in range(args.tips):
                token = os.urandom(16).hex()
                miners.command(cmd="arm", watch=token)
                with socket.create_connection(("127.0.0.1", echo.port)) as ctl:
                    t0 = time.time()
                    ctl.sendall(b"BCAST " + token.encode() + b"\n")
                    seen = miners.command(cmd="report", timeout=20)
                    write_loop = float(ctl.makefile("rb").readline())
                print(f"  {'echo baseline':<28}{n:>7}{(rss1 - rss0) / 1e6:>9.1f}MB{(rss1 - rss0) / n / 1e3:>8.1f}KB"
                      f"{(seen['first'] - t0) * 1e3:>10.1f}{(seen['last'] - t0) * 1e3:>9.1f}"
                      f"{seen['seen']:>6}/{seen['of']}   its write loop {write_loop * 1e3:.1f} ms")
        finally:
            miners.stop()
            echo.stop()
        pool = Pool(node, ctx["tmp"], f"hold-{n}")
        try:
            time.sleep(0.5)
            rss0 = rss_bytes(pool.pid)
            miners = Fleet(pool.port, n, ACCEPT_D, args.client_procs)
            try:
                time.sleep(1.0)
                rss1 = rss_bytes(pool.pid)
                for _ in range(args.tips):
                    watch = node.call("benchnexttip")
                    miners.command(cmd="arm", watch=watch)
                    cpu = Cpu({"pool": (pool.pid, None), "loop": (pool.pid, pool.pid), "node": (node.pid, None)})
                    tip = node.new_tip()
                    seen = miners.command(cmd="report", timeout=30)
                    usage = cpu.done()
                    if seen["seen"] < seen["of"]:
                        problems.append(f"hold {n}: only {seen['seen']} of {seen['of']} miners got the new tip")
                    first = (seen["first"] - tip["announced"]) * 1e3 if seen["first"] else float("nan")
                    last = (seen["last"] - tip["announced"]) * 1e3 if seen["last"] else float("nan")
                    print(f"  {'pool (ZMQ + GBT 2.3 MB)':<28}{n:>7}{(rss1 - rss0) / 1e6:>9.1f}MB"
                          f"{(rss1 - rss0) / n / 1e3:>8.1f}KB{first:>10.1f}{last:>9.1f}{seen['seen']:>6}/{seen['of']}"
                          f"   pool cpu {usage['pool']:.0%}")
                    ctx.setdefault("table", []).append((f"hold {n}", {"rss_per_conn": (rss1 - rss0) / n,
                                                                       "first_ms": first, "last_ms": last}))
                    time.sleep(0.5)
            finally:
                miners.stop()
        finally:
            pool.stop()


def compare(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    """The accepted path on the full template and on the same work without transactions."""
    print(f"\n== compare: accept path, 100 connections, {args.seconds:g} s windows: template with 1,556 "
          "transactions vs none (same node code, mainnet bits)")
    print(header(lat=True))
    empty_node = MainnetNode(empty=True)
    empty_node.start()
    try:
        empty_pool = Pool(empty_node, ctx["tmp"], "empty")
        try:
            for inflight in args.compare_inflight:
                full = window(ctx["pool"].port, ctx["pool"].pid, 100, ACCEPT_D, args.seconds, inflight,
                              node=ctx["node"])
                empty = window(empty_pool.port, empty_pool.pid, 100, ACCEPT_D, args.seconds, inflight,
                               node=empty_node)
                print(fmt_row(f"{inflight} in flight, empty template", empty, None, lat=True))
                print(fmt_row(f"{inflight} in flight, 1,556 txs", full, empty["rate"], lat=True))
                for name, r in (("empty", empty), ("1,556 txs", full)):
                    check(r, True, ctx["problems"], f"compare inflight={inflight}")
                    print(f"    {name}: loop thread {r['loop'] / r['rate'] * 1e6:.0f} us/share, other threads "
                          f"(ledger writer) {(r['server'] - r['loop']) / r['rate'] * 1e6:.0f} us/share")
            cached_pool = Pool(ctx["node"], ctx["tmp"], "cached-fees", cache_fees=True)
            try:
                cached = window(cached_pool.port, cached_pool.pid, 100, ACCEPT_D, args.seconds, 1, node=ctx["node"])
            finally:
                cached_pool.stop()
            check(cached, True, ctx["problems"], "compare cached fees")
            print(fmt_row("1 in flight, 1,556 txs, fees cached", cached, None, lat=True)
                  + "  (what-if: total_fees once per template)")
            print(f"    fees cached: loop thread {cached['loop'] / cached['rate'] * 1e6:.0f} us/share, other threads "
                  f"{(cached['server'] - cached['loop']) / cached['rate'] * 1e6:.0f} us/share")
        finally:
            empty_pool.stop()
    finally:
        empty_node.stop()


STAGES = (  # (label, substrings of "file:function" whose cumulative time is the stage's)
    ("share check (C hash + job lookup)", ("shares.py:check_submission",)),
    ("ShareRecord (incl. total_fees sums)", ("coordinator.py:share_record",)),
    ("  of which BlockTemplate.total_fees", ("jobs.py:total_fees",)),
    ("ledger.record_share (queue to writer)", ("sqlite.py:record_share",)),
    ("stats.accepted", ("stats.py:accepted",)),
    ("metrics (prometheus inc)", ("metrics/ops", "prometheus_client/metrics.py:inc")),
    ("vardiff.record_share", ("vardiff.py:record_share",)),
    ("protocol: parse line / events", ("protocol.py:receive_data", "protocol.py:next_event")),
    ("protocol: answer_submit (JSON out)", ("protocol.py:answer_submit",)),
    ("session.flush (transport.write)", ("server.py:flush",)),
    ("logging (structlog)", ("structlog/_native.py", "structlog/_base.py:_proxy_to_logger")),
)


def _profile_once(node: MainnetNode, tmp: Path, name: str, seconds: float, out: Path) -> tuple[dict[str, Any], Any]:
    pool = Pool(node, tmp, name, profile=out)
    try:
        def on_window(phase: str) -> None:
            pool.signal(signal.SIGUSR1 if phase == "start" else signal.SIGUSR2)

        r = window(pool.port, pool.pid, 100, ACCEPT_D, seconds, 1, node=node, on_window=on_window)
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # dump_stats may still be writing
    finally:
        pool.stop()
    return r, pstats.Stats(str(out))


def _stage_times(stats: Any) -> tuple[float, dict[str, float]]:
    """Loop-thread time profiled, and the cumulative time of each stage's function."""
    total = sum(v[2] for v in stats.stats.values())
    cum: dict[str, float] = {}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        lib = "prometheus_client/" if "prometheus_client" in file else "structlog/" if "structlog" in file else ""
        key = f"{lib}{Path(file).name}:{func}"
        cum[key] = cum.get(key, 0.0) + ct
    stages = {label: max((v for k, v in cum.items() if any(x in k for x in keys)), default=0.0)
              for label, keys in STAGES}
    return total, stages


def profile(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    """cProfile of the pool's loop thread over an accept window, full and empty template; per share by stage."""
    out = Path(args.profile_out) if args.profile_out else ctx["tmp"] / "pool.prof"
    print(f"\n== profile: pool loop thread under cProfile, accept path, 100 connections, 1 in flight, "
          f"{args.seconds:g} s (cProfile slows Python code ~2-5x, generators most: read the shares)")
    r_full, s_full = _profile_once(ctx["node"], ctx["tmp"], "profile-full", args.seconds, out)
    empty_node = MainnetNode(empty=True)
    empty_node.start()
    try:
        r_empty, s_empty = _profile_once(empty_node, ctx["tmp"], "profile-empty", args.seconds,
                                         ctx["tmp"] / "pool-empty.prof")
    finally:
        empty_node.stop()
    (t_full, st_full), (t_empty, st_empty) = _stage_times(s_full), _stage_times(s_empty)
    n_full, n_empty = r_full["ok"] or 1, r_empty["ok"] or 1
    print(f"  {'us of loop thread per accepted share':<40}{'1,556 txs':>12}{'empty':>9}")
    print(f"  {'total profiled':<40}{t_full / n_full * 1e6:>12.1f}{t_empty / n_empty * 1e6:>9.1f}"
          f"   ({r_full['ok']:,} and {r_empty['ok']:,} shares)")
    for label, _ in STAGES:
        print(f"  {label:<40}{st_full[label] / n_full * 1e6:>12.1f}{st_empty[label] / n_empty * 1e6:>9.1f}")
    print("  top functions by own time (1,556 txs):")
    rows = sorted(s_full.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]  # type: ignore[attr-defined]
    for (file, line, func), (_cc, nc, tt, ct, _c) in rows:
        print(f"    {tt / n_full * 1e6:>7.1f} us/share own {ct / n_full * 1e6:>7.1f} cum  {nc:>10,} calls  "
              f"{Path(file).name}:{line}({func})")
    # The one stage that scales with the template, timed without the profiler.
    sys.path.insert(0, str(REPO_ROOT))
    import timeit

    from pool.mining.jobs import parse_template

    template = parse_template(ctx["node"].call("getblocktemplate", {"rules": ["segwit"]}))
    per_call = timeit.timeit(lambda: template.total_fees, number=500) / 500
    print(f"  unprofiled: BlockTemplate.total_fees over {len(template.transactions):,} transactions = "
          f"{per_call * 1e6:.1f} us per call; Coordinator.share_record calls it twice per accepted share "
          f"({2 * per_call * 1e6:.0f} us/share; 0 on an empty template)")


# ---- main -------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short windows and smaller sizes (about 70 s)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run: {','.join(SECTIONS)}")
    p.add_argument("--seconds", type=float, help="timed window per measurement (default 3; quick 1.5)")
    p.add_argument("--inflight", type=int, default=1, help="throughput: submits in flight per connection")
    p.add_argument("--connections", help="throughput: connection counts (default 100,1000; quick 100,1000)")
    p.add_argument("--hold", help="hold: connection counts (default 1000,5000,10000,19500; quick 1000,5000)")
    p.add_argument("--tips", type=int, help="hold: new tips per size (default 3; quick 1)")
    p.add_argument("--tipload-seconds", type=float, help="tipload: window (default 20; quick 6)")
    p.add_argument("--tip-every", type=float, help="tipload: seconds between new tips (default 5; quick 2)")
    p.add_argument("--client-procs", type=int, default=1, help="hold: load-generator processes (default 1)")
    p.add_argument("--profile-out", help="profile: keep the cProfile stats in this file")
    p.add_argument("--pool-child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.pool_child:
        return args
    q = args.quick
    args.only = [s for s in args.only.split(",") if s]
    if any(s not in SECTIONS for s in args.only):
        p.error(f"--only takes {','.join(SECTIONS)}")
    args.seconds = args.seconds or (1.5 if q else 3.0)
    args.connections = [int(x) for x in (args.connections or "100,1000").split(",")]
    args.hold = [int(x) for x in (args.hold or ("1000,5000" if q else "1000,5000,10000,19500")).split(",")]
    args.tips = args.tips or (1 if q else 3)
    args.tipload_seconds = args.tipload_seconds or (6.0 if q else 20.0)
    args.tip_every = args.tip_every or (2.0 if q else 5.0)
    args.latency = [(5000, 1000), (15000, 100)]
    args.compare_inflight = [1] if q else [1, 8]
    if not 0 < args.seconds <= 60 or not 1 <= args.inflight <= 100:
        p.error("--seconds must be in (0, 60] and --inflight in [1, 100]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pool_child:
        return pool_child(args.pool_child)
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="stratum-load-"))
    node = MainnetNode()
    ctx: dict[str, Any] = {"tmp": tmp, "problems": [], "node": node}
    started = time.monotonic()
    try:
        info = node.start()
        print(f"stratum load: pool run (uvloop) vs mainnet-like node: block 413567 template, {info['transactions']}"
              f" transactions, height {info['height']}, bits {info['bits']} (difficulty {info['difficulty']:.4g});"
              f" {os.cpu_count()} CPUs; 100% CPU = one core")
        ctx["echo"] = Echo()
        if {"throughput", "latency", "compare"} & set(args.only):
            ctx["pool"] = Pool(node, tmp, "main")
        for name in args.only:
            globals()[name](ctx, args)
        stats = node.call("benchstats")
        if stats["submitted"]:
            ctx["problems"].append(f"submitblock called {stats['submitted']} times: a share was a block?")
        print(f"\nblocks submitted: {stats['submitted']} (none expected at mainnet difficulty)")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "pool" in ctx:
            ctx["pool"].stop()
        if "echo" in ctx:
            ctx["echo"].stop()
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for problem in ctx["problems"]:
        print(f"PROBLEM: {problem}")
    print(f"sanity (all answered, expected answers, every miner notified, no blocks): "
          f"{'PASS' if not ctx['problems'] else 'FAIL'}; {time.monotonic() - started:.0f} s")
    return 1 if ctx["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
