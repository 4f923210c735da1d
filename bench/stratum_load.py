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
* tipload: open loop 3,000 accepted submits/s over 1,000 connections, with a new tip every 10 s and without:
  what template fetching, parsing and fan-out do to reply latency; beside it the same load on the echo server,
  without and with a notify-sized line broadcast to every connection at each "tip" (the client's own floor).
* hold: N logged-in idle connections (RSS delta / N, the echo server's beside it), then new tips through the
  node's ``benchnewtip`` (ZMQ hashblock + long poll): wall time from the announcement to the first and the last
  miner holding a ``mining.notify`` with the new prevhash; the baseline broadcasts a same-size line itself.
* compare: the accepted path on this template and on the same work without transactions (``--empty`` node),
  with 1 and 8 submits in flight per connection: what the regtest benchmark's set-up hid.
* profile: cProfile of the pool's event-loop thread over an accept window (``--profile-out`` keeps the stats).
* processes: ``stratum.processes`` = 1 vs 2 (``--processes 1,2``) side by side, each pool started fresh: closed-loop
  reject and accept throughput (CPU: the pool with its front-end processes), and new tip -> first/last miner
  notified for ``--proc-hold`` miners (1,000, 5,000, 10,000). Not in the default set (``--only processes``).

At mainnet difficulty no share is a block (checked: ``submitblock`` never called). ``--quick`` finishes in
in under 90 s; the full run takes about six minutes. Usage: ``python bench/stratum_load.py [--quick] [--only
throughput,latency,tipload,hold,compare,profile] [--seconds 3] [--hold 1000,5000,10000,19500]``.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import socket
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
from procs import Cpu, Echo, Fleet, Miners, Pool, parse_override, rss_bytes  # noqa: E402

ACCEPT_D, REJECT_D = 1e-10, 1e6
SECTIONS = ("throughput", "latency", "tipload", "hold", "compare", "profile", "processes")


# ---- measurements ----------------------------------------------------------------------------------------------


def window(port: int, server_pid: int, connections: int, difficulty: float | None, seconds: float,
           inflight: int = 1, rate: float = 0.0, node: MainnetNode | None = None,
           on_window: Any = None) -> dict[str, Any]:
    """One client process, one timed window; CPU of the server (and its loop thread), client and node."""
    miners = Miners(port, connections, difficulty)
    try:
        pids: dict[str, tuple[int, int | None]] = {"server": (server_pid, None), "loop": (server_pid, server_pid),
                                                   "main_process": (server_pid, 0), "client": (miners.pid, None)}
        if node is not None:
            pids["node"] = (node.pid, None)
        cpu = Cpu(pids)
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
    """Reply latency under steady load with and without new tips arriving (template fetch, parse, fan-out),
    beside the same load on the echo server with a notify-sized line broadcast to every connection at each
    'tip': the client's own floor (it reads every notify too)."""
    node, problems = ctx["node"], ctx["problems"]
    rate, k, seconds, every = 3000, 1000, args.tipload_seconds, args.tip_every
    print(f"\n== tipload: open loop {rate:,}/s over {k:,} connections, accept path, {seconds:g} s windows; a new tip "
          f"every {every:g} s vs none (miners switch to each new job; shares sent on the old one are stale)")
    print(f"  {'':<22}{'replies/s':>10}{'p50 ms':>8}{'p99 ms':>9}{'max ms':>9}{'stale':>7}{'tips':>6}{'pool':>7}"
          f"{'loop':>6}")
    echo = ctx["echo"]
    pool = Pool(node, ctx["tmp"], "tipload", overrides=args.overrides)
    try:
        for target, tips_on in ((echo, False), (echo, True), (pool, False), (pool, True)):
            is_echo = target is echo
            miners = Miners(target.port, k, None if is_echo else ACCEPT_D)
            try:
                cpu = Cpu({"pool": (target.pid, None), "loop": (target.pid, target.pid)})
                miners.send(cmd="run", seconds=seconds, rate=rate, warm=0.5)
                start, tips = time.monotonic(), 0
                while tips_on and time.monotonic() - start + every < seconds + 0.5:
                    time.sleep(every)
                    if is_echo:
                        with socket.create_connection(("127.0.0.1", echo.port)) as ctl:
                            ctl.sendall(b"BCAST tip%d\n" % tips)
                            ctl.makefile("rb").readline()  # its write loop's time: the broadcast is out
                    else:
                        t = node.new_tip()
                        if os.environ.get("LOADGEN_TRACE"):
                            print("TIP", f"{t['announced']:.4f}")
                    tips += 1
                r = miners.read()
                usage = cpu.done()
            finally:
                miners.stop()
            check(r, None if is_echo else True, problems, f"tipload {'echo' if is_echo else 'pool'} tips={tips_on}")
            label = f"{'echo' if is_echo else 'pool'}, {'with tips' if tips_on else 'no tips'}"
            print(f"  {label:<22}{r['rate']:>10,.0f}{r['p50'] * 1e3:>8.2f}"
                  f"{r['p99'] * 1e3:>9.2f}{r['max'] * 1e3:>9.1f}{r['stale']:>7}{tips:>6}{usage['pool']:>7.0%}"
                  f"{usage['loop']:>6.0%}")
    finally:
        pool.stop()


def hold(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    node, problems = ctx["node"], ctx["problems"]
    limit = raise_nofile()
    print(f"\n== hold: idle connections (connected only; logged in), RSS per connection, new tip -> miners "
          f"notified (open-files limit {limit}; {args.tips} tip(s) per size; {args.client_procs} client process(es))")
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
        # Connected, never subscribed (before the pool's subscribe timeout): what an idle socket costs the pool.
        pool = Pool(node, ctx["tmp"], f"bare-{n}", overrides=args.overrides)
        try:
            time.sleep(0.5)
            rss0 = rss_bytes(pool.pid)
            bare = Fleet(pool.port, n, None, args.client_procs)
            try:
                time.sleep(1.0)
                rss1 = rss_bytes(pool.pid)
                print(f"  {'pool, connected only':<28}{n:>7}{(rss1 - rss0) / 1e6:>9.1f}MB"
                      f"{(rss1 - rss0) / n / 1e3:>8.1f}KB")
            finally:
                bare.stop()
        finally:
            pool.stop()
        pool = Pool(node, ctx["tmp"], f"hold-{n}", overrides=args.overrides)
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
        empty_pool = Pool(empty_node, ctx["tmp"], "empty", overrides=args.overrides)
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
        finally:
            empty_pool.stop()
    finally:
        empty_node.stop()


def processes(ctx: dict[str, Any], args: argparse.Namespace) -> None:
    """The same measurements on one Stratum process and on several (front-ends + coordinator), same run."""
    node, problems = ctx["node"], ctx["problems"]
    counts = args.processes
    print(f"\n== processes: stratum.processes = {' vs '.join(map(str, counts))}; closed loop, {args.inflight} in "
          f"flight, {args.seconds:g} s windows; new tip -> miners notified ({args.tips} tip(s) per size, "
          f"{args.client_procs} client process(es)); srv = pool CPU with its front-ends, main = the event-loop thread of "
          "the process started (the coordinator when N >= 2); 100% = one core")
    rows: dict[str, dict[int, str]] = {}
    for n in counts:
        overrides = {**args.overrides, "stratum.processes": n}
        pool = Pool(node, ctx["tmp"], f"procs-{n}", overrides=overrides)
        try:
            time.sleep(0.5)
            for k in args.connections:
                for name, d in (("reject", REJECT_D), ("accept", ACCEPT_D)):
                    r = window(pool.port, pool.pid, k, d, args.seconds, args.inflight, node=node)
                    check(r, d == ACCEPT_D, problems, f"processes={n} {name} K={k}")
                    # "main": the main thread of the process `pool run` started (the coordinator when N >= 2).
                    rows.setdefault(f"{name} replies/s, {k:,} conns", {})[n] = \
                        f"{r['rate']:,.0f} (srv {r['server']:.0%}, main {r['loop']:.0%})"
                    # CPU per share: the coordinator process (or the one process) and the front-ends together.
                    front = r["server"] - r["main_process"] if n > 1 else 0.0
                    per = (f"front-ends {front / r['rate'] * 1e6:.1f} + coord {r['main_process'] / r['rate'] * 1e6:.1f}"
                           if n > 1 else f"process {r['main_process'] / r['rate'] * 1e6:.1f}")
                    rows.setdefault(f"  {name} us CPU/share, {k:,} conns", {})[n] = per
        finally:
            pool.stop()
        for size in args.proc_hold:  # a fresh pool per size
            pool = Pool(node, ctx["tmp"], f"procs-{n}-hold-{size}", overrides=overrides)
            try:
                time.sleep(0.5)
                miners = Fleet(pool.port, size, ACCEPT_D, args.client_procs)
                try:
                    time.sleep(1.0)
                    lasts, firsts = [], []
                    for _ in range(args.tips):
                        watch = node.call("benchnexttip")
                        miners.command(cmd="arm", watch=watch)
                        tip = node.new_tip()
                        seen = miners.command(cmd="report", timeout=30)
                        if seen["seen"] < seen["of"]:
                            problems.append(f"processes={n} hold {size}: {seen['seen']} of {seen['of']} notified")
                        if seen["first"]:
                            firsts.append((seen["first"] - tip["announced"]) * 1e3)
                        if seen["last"]:
                            lasts.append((seen["last"] - tip["announced"]) * 1e3)
                        time.sleep(0.5)
                    rows.setdefault(f"new tip -> first/last of {size:,} (ms)", {})[n] = \
                        f"{min(firsts, default=float('nan')):.0f} / {max(lasts, default=float('nan')):.0f}"
                finally:
                    miners.stop()
            finally:
                pool.stop()
    print(f"  {'':<38}" + "".join(f"{f'N = {n}':>34}" for n in counts))
    for label, by_n in rows.items():
        print(f"  {label:<38}" + "".join(f"{by_n.get(n, '-'):>34}" for n in counts))


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


def _profile_once(node: MainnetNode, tmp: Path, name: str, seconds: float, out: Path,
                  overrides: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    pool = Pool(node, tmp, name, profile=out, overrides=overrides)
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
    r_full, s_full = _profile_once(ctx["node"], ctx["tmp"], "profile-full", args.seconds, out, args.overrides)
    empty_node = MainnetNode(empty=True)
    empty_node.start()
    try:
        r_empty, s_empty = _profile_once(empty_node, ctx["tmp"], "profile-empty", args.seconds,
                                         ctx["tmp"] / "pool-empty.prof", args.overrides)
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
    p.add_argument("--quick", action="store_true", help="short windows and smaller sizes (under 90 s)")
    p.add_argument("--only", default=",".join(SECTIONS[:-1]), help=f"sections to run: {','.join(SECTIONS)}")
    p.add_argument("--seconds", type=float, help="timed window per measurement (default 3; quick 1.5)")
    p.add_argument("--inflight", type=int, default=1, help="throughput: submits in flight per connection")
    p.add_argument("--connections", help="throughput: connection counts (default 100,1000; quick 100,1000)")
    p.add_argument("--hold", help="hold: connection counts (default 1000,5000,10000,19500; quick 1000,5000)")
    p.add_argument("--tips", type=int, help="hold: new tips per size (default 3; quick 1)")
    p.add_argument("--tipload-seconds", type=float, help="tipload: window (default 30; quick 6)")
    p.add_argument("--tip-every", type=float, help="tipload: seconds between new tips (default 10; quick 2)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra pool setting for every pool started (repeatable), e.g. stratum.processes=2")
    p.add_argument("--client-procs", type=int, default=1, help="hold: load-generator processes (default 1)")
    p.add_argument("--profile-out", help="profile: keep the cProfile stats in this file")
    p.add_argument("--processes", default="1,2", help="processes: stratum.processes values compared (default 1,2)")
    p.add_argument("--proc-hold", help="processes: miners per new-tip measurement (default 1000,5000,10000)")
    args = p.parse_args(argv)
    q = args.quick
    args.only = [s for s in args.only.split(",") if s]
    args.processes = [int(x) for x in args.processes.split(",")]
    hold_sizes = "1000,5000" if q else "1000,5000,10000"
    args.proc_hold = [int(x) for x in (hold_sizes if args.proc_hold is None else args.proc_hold).split(",") if x]
    if any(s not in SECTIONS for s in args.only):
        p.error(f"--only takes {','.join(SECTIONS)}")
    args.seconds = args.seconds or (1.5 if q else 3.0)
    args.connections = [int(x) for x in (args.connections or "100,1000").split(",")]
    args.hold = [int(x) for x in (args.hold or ("1000,5000" if q else "1000,5000,10000,19500")).split(",")]
    args.tips = args.tips or (1 if q else 3)
    args.tipload_seconds = args.tipload_seconds or (6.0 if q else 30.0)
    args.tip_every = args.tip_every or (2.0 if q else 10.0)  # the goal: a tip every 10 s at 3,000/s
    args.latency = [(5000, 1000), (15000, 100)]
    try:
        args.overrides = dict(parse_override(x) for x in args.set)
    except ValueError as exc:
        p.error(str(exc))
    args.compare_inflight = [1] if q else [1, 8]
    if not 0 < args.seconds <= 60 or not 1 <= args.inflight <= 100:
        p.error("--seconds must be in (0, 60] and --inflight in [1, 100]")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
            ctx["pool"] = Pool(node, tmp, "main", overrides=args.overrides)
        for name in args.only:
            globals()[name](ctx, args)
        stats = node.call("benchstats")
        if stats["submitted"]:
            ctx["problems"].append(f"submitblock called {stats['submitted']} times: a share was a block?")
        print(f"\nblocks submitted: {stats['submitted']} (none expected at mainnet difficulty)")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a process that did not start (the pool's own message is in it)
        print(f"stratum load: {exc}", file=sys.stderr)
        return 2
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
