"""Simulated Stratum miners and the line-echo baseline server, each run as a child process of ``stratum_load``.

Why a child process each: the pool, the load generator and the baseline server must not share a core's
event loop, or the figures would measure their contention. Both speak to the orchestrator with JSON lines:
the client prints ``{"ready": ...}`` once every connection is logged in, then obeys commands read from stdin
(``run`` a timed window, ``arm``/``report`` a new-tip watch, ``quit``), answering each with one JSON line.

Miners: ``mining.subscribe``, ``mining.authorize`` with a fixed ``d=`` difficulty, then ``mining.submit`` lines
for the job of the first ``mining.notify``: a random extranonce2 per connection and nonces from a per-connection
odd-stride walk over the 32-bit space (distinct, random-looking, no duplicates). The client hashes nothing: the
pool hashes every share fully whatever the client did, and at mainnet network difficulty no share is a block.
At ``d=1e-10`` (below any hash's difficulty) every share is accepted; at ``d=1e6`` every share is rejected as
low difficulty after the pool hashed it.

Echo server: answers each received line with one fixed ``{"id":0,"result":true,"error":null}`` (one write per
read), and on a ``BCAST <text>`` line from a connection broadcasts a notify-sized line containing ``<text>``
to every other connection: the same client code, the least server work, the client's own ceiling.

Debugging a latency figure: with ``LOADGEN_TRACE=PATH`` each client writes every reply slower than 3 ms as
"send time (wall clock), latency ms" lines to ``PATH.<pid>`` when it exits, and ``stratum_load``'s tipload
section prints the wall-clock time of each new tip ("TIP ..."), so slow replies can be placed against tips.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import resource
import sys
import time
from typing import Any

TRACE: list[tuple[float, float]] | None = [] if os.environ.get("LOADGEN_TRACE") else None  # slow replies
ECHO_REPLY = b'{"id":0,"result":true,"error":null}\n'
HANDSHAKE_TIMEOUT = 60.0
CONNECT_CONCURRENCY = 256
STRIDE = 0x9E3779B1  # odd: i * STRIDE walks all 2**32 nonces without repeating


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (connections are file descriptors); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))]


def run_loop(coro: Any) -> Any:
    """uvloop, as ``pool run`` uses."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# ---- client ---------------------------------------------------------------------------------------------------


class Miner(asyncio.Protocol):
    """One connection: JSON handshake, then a byte-level path that matches replies to requests in order."""

    __slots__ = ("client", "transport", "buf", "fast", "messages", "sent", "prefix", "nonce", "seq", "ok", "err",
                 "first_error", "watch", "seen_at", "closed", "username", "extranonce2", "stale")

    def __init__(self, client: Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.fast = False
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: collections.deque[float] = collections.deque()
        self.prefix = b""
        self.nonce = int.from_bytes(os.urandom(4), "little")
        self.seq = 100
        self.ok = 0
        self.err = 0
        self.first_error = b""
        self.watch = b""
        self.seen_at = 0.0
        self.closed = False
        self.username = ""
        self.extranonce2 = ""
        self.stale = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.lost += 1

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.watch and not self.seen_at and self.watch in data:
            self.seen_at = time.time()
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
        c = self.client
        answered = 0
        sent = self.sent
        for line in buf[:end].split(b"\n"):
            if b'"method"' in line:  # notifications and server requests (client.get_version)
                if b'"mining.notify"' in line and self.username:
                    self.follow_line(line)
                continue
            answered += 1
            t_sent = sent.popleft() if sent else now
            if b'"result":true' in line:
                self.ok += 1
            elif b'"error":[21,' in line:  # sent on the previous tip's job before its notify arrived
                self.stale += 1
            else:
                self.err += 1
                if not self.first_error:
                    self.first_error = line[:160]
            if c.warm_at <= now <= c.end_at:
                c.counted += 1
                if t_sent >= c.warm_at:
                    c.latencies.append(now - t_sent)
                    if TRACE is not None and now - t_sent > 0.003:
                        TRACE.append((time.time() - (now - t_sent), now - t_sent))
        if answered and c.closed_loop and now < c.end_at:
            self.send(answered, now)

    def body(self) -> bytes:
        self.nonce = (self.nonce + STRIDE) & 0xFFFFFFFF
        return self.prefix + b'%08x"]}\n' % self.nonce

    def send(self, count: int, scheduled: float) -> None:
        assert self.transport is not None
        seq = self.seq
        self.transport.write(b"".join(b'{"id":%d,%b' % (seq + i, self.body()) for i in range(count)))
        self.seq = seq + count
        self.sent.extend([scheduled] * count)

    async def request(self, req_id: int, method: str, params: list[Any]) -> dict[str, Any]:
        assert self.transport is not None
        self.transport.write(json.dumps({"id": req_id, "method": method, "params": params}).encode() + b"\n")
        while True:
            msg = await self.messages.get()
            if msg.get("id") == req_id and "method" not in msg:
                return msg
            self.client.notes.append(msg)  # notifications seen during the handshake

    async def login(self, username: str, difficulty: float) -> None:
        """subscribe + authorize; build the submit prefix from the first notify's job."""
        reply = await self.request(1, "mining.subscribe", ["stratum-load/1.0"])
        en2_size = int(reply["result"][2])
        notes_from = len(self.client.notes)
        reply = await self.request(2, "mining.authorize", [username, f"d={difficulty!r}"])
        if reply.get("result") is not True:
            raise RuntimeError(f"authorize refused: {reply}")
        job = next((m["params"] for m in self.client.notes[notes_from:] if m.get("method") == "mining.notify"), None)
        while job is None:
            msg = await self.messages.get()
            if msg.get("method") == "mining.notify":
                job = msg["params"]
        del self.client.notes[notes_from:]
        self.username, self.extranonce2 = username, os.urandom(en2_size).hex()
        self.follow(job)

    def follow_line(self, line: bytes) -> None:
        """``follow`` for a raw notify line, without decoding its JSON: at a new tip every connection gets one
        (1-2 KB each), and a full decode per connection would stall this client for tens of ms, showing up as
        reply latency that is the client's, not the server's. Job id: the first parameter; ntime: the last
        string (``...,"ntime",true]}``). Anything unexpected goes through the JSON decoder."""
        head = b'"params":["'
        start = line.find(head)
        if start >= 0:
            start += len(head)
            end = line.find(b'"', start)
            tail = line.rsplit(b'"', 2)
            if end > start and len(tail) == 3 and len(tail[1]) == 8 and tail[2].startswith((b",true]", b",false]")):
                job_id, ntime = line[start:end].decode(), tail[1].decode()
                self.follow([job_id, "", "", "", [], "", "", ntime])
                return
        self.follow(json.loads(line)["params"])

    def follow(self, job: list[Any]) -> None:
        """Submit on this job from now on (a miner switches at each notify; new extranonce2 space not needed:
        a new job has a new coinbase)."""
        params = json.dumps([self.username, job[0], self.extranonce2, job[7]], separators=(",", ":"))
        self.prefix = b'"method":"mining.submit","params":' + params[:-1].encode() + b',"'


class Client:
    """All connections of one client process and the clock of the current timed window."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.miners: list[Miner] = []
        self.notes: list[dict[str, Any]] = []
        self.warm_at = self.end_at = float("inf")
        self.closed_loop = True
        self.counted = 0
        self.latencies: list[float] = []
        self.lost = 0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with gate:
                _, miner = await loop.create_connection(lambda: Miner(self), "127.0.0.1", spec["port"])
                self.miners.append(miner)
                if spec["login"]:
                    await miner.login(spec["username"], spec["difficulty"])
                miner.fast = True
                miner.buf = b""

        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(spec["connections"]))),
                               HANDSHAKE_TIMEOUT + spec["connections"] / 200)
        if not spec["login"]:  # echo: the same submit lines, for a job nobody checks
            for m in self.miners:
                m.prefix = (b'"method":"mining.submit","params":["' + spec["username"].encode()
                            + b'","1","' + os.urandom(8).hex().encode() + b'","5b2b2b2b","')

    async def window(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """One timed window: closed loop (``inflight`` per connection) or open loop (``rate`` submits/s)."""
        seconds, warm = float(cmd["seconds"]), float(cmd.get("warm", 0.5))
        self.counted, self.latencies = 0, []
        for m in self.miners:
            m.ok = m.err = m.stale = 0
            m.first_error = b""
        rate = float(cmd.get("rate", 0))
        self.closed_loop = rate <= 0
        start = time.perf_counter() + 0.01
        self.warm_at, self.end_at = start + warm, start + warm + seconds
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu0 = None
        if self.closed_loop:
            now = time.perf_counter()
            for m in self.miners:
                m.send(int(cmd.get("inflight", 1)), now)
        else:
            n, sent, miners = len(self.miners), 0, self.miners
            while True:
                now = time.perf_counter()
                if cpu0 is None and now >= self.warm_at:
                    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
                if now >= self.end_at:
                    break
                due = int((now - start) * rate)
                while sent < due:  # stamped when written: a 1 ms tick writes what fell due since the last one
                    miners[sent % n].send(1, now)
                    sent += 1
                await asyncio.sleep(0.001)  # uvloop's timers have 1 ms resolution
        await asyncio.sleep(max(0.0, self.warm_at - time.perf_counter()))
        if cpu0 is None:
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, self.end_at - time.perf_counter()))
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        wall = (self.warm_at, self.end_at)
        deadline = time.perf_counter() + 15
        while any(m.sent for m in self.miners) and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        lat = sorted(self.latencies)
        ok, err = sum(m.ok for m in self.miners), sum(m.err for m in self.miners)
        first_error = next((m.first_error for m in self.miners if m.first_error), b"")
        return {
            "rate": self.counted / seconds, "p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99),
            "max": lat[-1] if lat else float("nan"), "ok": ok, "err": err,
            "stale": sum(m.stale for m in self.miners),
            "first_error": first_error.decode(errors="replace"),
            "client_cpu": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / seconds,
            "undrained": sum(len(m.sent) for m in self.miners), "lost": self.lost,
            "window_offset": [wall[0] - time.perf_counter(), wall[1] - time.perf_counter()],
        }

    async def report_tip(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Wait (bounded) until every connection saw ``watch``; arrival times are wall clock (time.time())."""
        deadline = time.monotonic() + float(cmd.get("timeout", 20))
        while time.monotonic() < deadline and not all(m.seen_at or m.closed for m in self.miners):
            await asyncio.sleep(0.01)
        times = sorted(m.seen_at for m in self.miners if m.seen_at)
        return {"seen": len(times), "of": len(self.miners), "first": times[0] if times else None,
                "last": times[-1] if times else None, "p50": percentile(times, 0.5)}


async def client_main(spec: dict[str, Any]) -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    client = Client(spec)

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    try:
        await client.connect()
    except Exception as exc:  # reported to the orchestrator, which prints it
        emit({"error": f"{type(exc).__name__}: {exc}", "connected": len(client.miners)})
        return
    emit({"ready": len(client.miners)})
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            result = await client.window(cmd)
            now_wall = time.time()
            off = result.pop("window_offset")
            result["window"] = [now_wall + off[0], now_wall + off[1]]
            emit(result)
        elif cmd["cmd"] == "arm":
            for m in client.miners:
                m.watch, m.seen_at = cmd["watch"].encode(), 0.0
            emit({"armed": True})
        elif cmd["cmd"] == "report":
            emit(await client.report_tip(cmd))
        elif cmd["cmd"] == "quit":
            break
    if TRACE is not None:
        with open(os.environ["LOADGEN_TRACE"] + f".{os.getpid()}", "w") as fh:
            fh.write("\n".join(f"{a:.4f} {b*1e3:.2f}" for a, b in TRACE))
    for m in client.miners:
        if m.transport is not None:
            m.transport.abort()


# ---- echo server ----------------------------------------------------------------------------------------------


class EchoConn(asyncio.Protocol):
    __slots__ = ("server", "transport")

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if data.startswith(b"BCAST "):
            start = time.perf_counter()
            self.server.broadcast(data[6:].strip(), self)
            self.transport.write(b"%.6f\n" % (time.perf_counter() - start))  # the write loop's own time
            return
        n = data.count(b"\n")
        if n:
            self.transport.write(ECHO_REPLY * n)


class EchoServer:
    def __init__(self) -> None:
        self.conns: set[EchoConn] = set()

    def broadcast(self, text: bytes, origin: EchoConn) -> None:
        """A notify-sized line (a mainnet job is ~1.2 KB) with ``text`` in it, the same bytes to everyone."""
        line = (b'{"id":null,"method":"mining.notify","params":["1","' + text + b'","' + b"00" * 400
                + b'",[],"20000000","18058436","5b2b2b2b",true]}\n')
        for conn in list(self.conns):
            if conn is not origin and conn.transport is not None:
                conn.transport.write(line)


async def echo_main() -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    echo = EchoServer()
    server = await loop.create_server(lambda: EchoConn(echo), "127.0.0.1", 0, backlog=4096)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()  # until the orchestrator closes our stdin
    server.close()


def main(argv: list[str]) -> int:
    if argv and argv[0] == "client":
        run_loop(client_main(json.loads(argv[1])))
    elif argv and argv[0] == "echo":
        run_loop(echo_main())
    else:
        print("usage: loadgen.py client SPEC_JSON | echo  (started by bench/stratum_load.py)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
