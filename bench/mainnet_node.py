"""A mainnet-like bitcoind stand-in for benchmarks: JSON-RPC over HTTP plus a ZMQ ``hashblock`` publisher.

Why: the regtest bitcoind gives the pool an empty template at a difficulty where every other hash is a block,
which hides what a real template costs (a 2.3 MB ``getblocktemplate`` answer to fetch and parse, an 11-level
merkle branch, fee totals over 1,556 transactions) and makes share checks end in ``submitblock``. This node
serves a template built from real mainnet block 413567 (the block Bitcoin Core's own benchmarks use; it ships
in the py-bitcoinkernel sdist that ``scripts/build-bitcoind.sh`` builds bitcoind from): all 1,556 transactions
with their txid, wtxid and data, the block's mainnet ``bits``, fees that add up to the block's real fee total
(split over the transactions by weight: the block has no prevouts to derive each one), and a
``default_witness_commitment`` computed from the wtxids the way bitcoind does (the pool checks it).

It answers what ``pool run`` calls: ``getblockchaininfo`` (chain "main"), ``getblocktemplate`` (with long poll:
``longpollid`` parks the request until the tip changes), ``submitblock`` (counted, always "inconclusive": this
node cannot validate), ``getblockheader``, ``getbestblockhash``, ``getblockcount``, ``getdifficulty``. Benchmarks
drive it with the extra RPC ``benchnewtip``: a new tip (new prevhash, height + 1) that publishes ZMQ
``hashblock`` and completes the parked long polls, returning the wall-clock time of the announcement.

Run: ``python bench/mainnet_node.py [--empty]`` prints one JSON line ``{"rpc_url", "zmq", "user", "password"}``
once listening (127.0.0.1, free ports) and serves until stdin closes or SIGTERM. ``MainnetNode`` below starts
and stops it as a child process. ``--empty`` serves the same work with no transactions (for comparisons).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SDIST_NAME = "py_bitcoinkernel-0.1.0a5.tar.gz"
SDIST_SHA256 = "71b91eecac7a8b07248be04471c3bf98016b38bf823aefd28f7b31179940520d"
BLOCK_MEMBER_SUFFIX = "depend/bitcoin/src/bench/data/block413567.raw"
BLOCK_HEIGHT = 413567
SUBSIDY = 2_500_000_000  # 25 BTC: heights 210,000-419,999 (the second halving came at 420,000)
MAX_BODY = 64 << 20
LONGPOLL_MAX_SECONDS = 60.0  # bitcoind returns a long poll after about a minute without news, too


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def merkle_root(hashes: list[bytes]) -> bytes:
    level = list(hashes)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [dsha(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


# ---- the block -----------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("truncated block")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        return int.from_bytes(self.take({0xFD: 2, 0xFE: 4, 0xFF: 8}[first]), "little")


@dataclass(frozen=True, slots=True)
class RawTx:
    data: bytes  # full serialization (with witness if any)
    txid: bytes  # internal order
    wtxid: bytes  # internal order
    weight: int
    output_value: int


def parse_tx(r: _Reader) -> RawTx:
    """One transaction; txid over the serialization without witness (BIP 144), wtxid over all of it."""
    start = r.pos
    version = r.take(4)
    segwit = r.data[r.pos] == 0 and r.data[r.pos + 1] != 0
    if segwit:
        r.take(2)
    body_start = r.pos
    for _ in range(r.varint()):
        r.take(36)
        r.take(r.varint())
        r.take(4)
    value = 0
    for _ in range(r.varint()):
        value += struct.unpack("<q", r.take(8))[0]
        r.take(r.varint())
    body_end = r.pos
    n_inputs = _Reader(r.data[body_start:body_end]).varint()
    if segwit:
        for _ in range(n_inputs):
            for _ in range(r.varint()):
                r.take(r.varint())
    locktime = r.take(4)
    full = r.data[start : r.pos]
    stripped = version + r.data[body_start:body_end] + locktime
    txid = dsha(stripped)
    return RawTx(full, txid, dsha(full) if segwit else txid, 3 * len(stripped) + len(full), value)


@dataclass(frozen=True, slots=True)
class Block:
    version: int
    prevhash: bytes  # internal order
    merkle_root: bytes
    time: int
    bits: int
    coinbase: RawTx
    txs: tuple[RawTx, ...]


def block_bytes() -> bytes:
    """block413567.raw: next to the cached bitcoind (build-bitcoind.sh copies it) or read from the cached sdist."""
    cache = Path(os.environ.get("POOL_CACHE_DIR", Path.home() / ".cache" / "pool"))
    candidates = [Path(os.environ["POOL_BITCOIND_DIR"])] if os.environ.get("POOL_BITCOIND_DIR") else []
    candidates += sorted(cache.glob("bitcoind-*"))
    for directory in candidates:
        if (directory / "block413567.raw").is_file():
            return (directory / "block413567.raw").read_bytes()
    sdist = cache / SDIST_NAME
    if not sdist.is_file():
        raise FileNotFoundError(f"no block413567.raw: run `bash scripts/build-bitcoind.sh` (fetches {sdist})")
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != SDIST_SHA256:
        raise ValueError(f"{sdist}: sha256 mismatch")
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            if member.name.endswith(BLOCK_MEMBER_SUFFIX):
                fh = tar.extractfile(member)
                if fh is not None:
                    return fh.read()
    raise FileNotFoundError(f"{sdist} has no {BLOCK_MEMBER_SUFFIX}")


def load_block(raw: bytes | None = None) -> Block:
    """Parse the block and check it against its own header (merkle root)."""
    raw = block_bytes() if raw is None else raw
    r = _Reader(raw)
    version, prevhash, root, ntime, bits, _nonce = struct.unpack("<I32s32sIII", r.take(80))
    count = r.varint()
    txs = [parse_tx(r) for _ in range(count)]
    if r.pos != len(raw):
        raise ValueError("trailing bytes after the block's transactions")
    if merkle_root([t.txid for t in txs]) != root:
        raise ValueError("block413567.raw: merkle root does not match its header")
    return Block(version, prevhash, root, ntime, bits, txs[0], tuple(txs[1:]))


def witness_commitment_script(wtxids: list[bytes]) -> str:
    """bitcoind's default_witness_commitment: the coinbase's wtxid counts as zero, the reserved value is zero."""
    root = merkle_root([b"\0" * 32, *wtxids])
    return ("6a24aa21a9ed" + dsha(root + b"\0" * 32).hex())


def build_transactions(block: Block) -> tuple[list[dict[str, Any]], int]:
    """GBT ``transactions`` entries; fees are the block's real total (coinbase outputs minus subsidy), split
    over the transactions by weight (the raw block carries no prevouts to compute each one)."""
    total_fees = block.coinbase.output_value - SUBSIDY
    total_weight = sum(t.weight for t in block.txs)
    entries: list[dict[str, Any]] = []
    given = 0
    for i, t in enumerate(block.txs):
        fee = total_fees - given if i == len(block.txs) - 1 else total_fees * t.weight // total_weight
        given += fee
        entries.append({
            "data": t.data.hex(), "txid": t.txid[::-1].hex(), "hash": t.wtxid[::-1].hex(), "depends": [],
            "fee": fee, "sigops": 4, "weight": t.weight,
        })
    return entries, total_fees


# ---- chain state and RPC -------------------------------------------------------------------------------------


class Chain:
    """The node's view: a tip that benchmarks move forward, and the template on it (serialized once per tip)."""

    def __init__(self, block: Block, empty: bool = False) -> None:
        self.block = block
        self.entries, self.total_fees = build_transactions(block)
        if empty:
            self.entries, self.total_fees = [], 0
        self.commitment = witness_commitment_script([bytes.fromhex(e["hash"])[::-1] for e in self.entries])
        self.height = BLOCK_HEIGHT  # height of the block being mined
        self.tip = block.prevhash  # internal order
        self.headers: dict[str, dict[str, Any]] = {}
        self._remember_tip(block.time - 600)
        self.poll_seq = 0
        self.changed = asyncio.Event()
        self.submitted = 0
        self.tips_published = 0
        self._template_cache: tuple[str, bytes] | None = None

    def _remember_tip(self, ntime: int) -> None:
        self.headers[self.tip[::-1].hex()] = {
            "hash": self.tip[::-1].hex(), "height": self.height - 1, "confirmations": 1, "time": ntime,
            "bits": f"{self.block.bits:08x}", "version": self.block.version, "mediantime": ntime - 3600,
        }

    @property
    def longpollid(self) -> str:
        return f"{self.tip[::-1].hex()}{self.poll_seq}"

    def next_tip(self) -> bytes:
        return dsha(self.tip + struct.pack("<Q", self.height))

    def new_tip(self) -> str:
        """Move to a new tip: a fresh prevhash, height + 1; the caller announces it."""
        for header in self.headers.values():
            header["confirmations"] += 1
        self.tip = self.next_tip()
        self.height += 1
        self.poll_seq += 1
        self._remember_tip(int(time.time()))
        self._template_cache = None
        self.changed.set()
        self.changed = asyncio.Event()
        return self.tip[::-1].hex()

    def template_result(self) -> bytes:
        """The JSON text of the current template's ``result`` (2.3 MB for the full block), built once per tip;
        ``curtime`` is the only field that moves within a tip, so it is spliced in per request."""
        key = self.longpollid
        if self._template_cache is None or self._template_cache[0] != key:
            b = self.block
            target = (b.bits & 0xFFFFFF) << (8 * ((b.bits >> 24) - 3))
            gbt = {
                "capabilities": ["proposal"], "version": 0x20000000, "rules": ["csv", "!segwit", "taproot"],
                "vbavailable": {}, "vbrequired": 0, "previousblockhash": self.tip[::-1].hex(),
                "transactions": self.entries, "coinbaseaux": {}, "coinbasevalue": SUBSIDY + self.total_fees,
                "longpollid": key, "target": f"{target:064x}", "mintime": b.time + 1,
                "mutable": ["time", "transactions", "prevblock"], "noncerange": "00000000ffffffff",
                "sigoplimit": 80000, "sizelimit": 4000000, "weightlimit": 4000000, "curtime": "CURTIME",
                "bits": f"{b.bits:08x}", "height": self.height, "default_witness_commitment": self.commitment,
            }
            self._template_cache = (key, json.dumps(gbt, separators=(",", ":")).encode())
        return self._template_cache[1].replace(b'"CURTIME"', str(max(int(time.time()), self.block.time + 1)).encode(), 1)

    def difficulty(self) -> float:
        bits = self.block.bits
        target = (bits & 0xFFFFFF) << (8 * ((bits >> 24) - 3))
        return (0xFFFF << 208) / target


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Node:
    """HTTP JSON-RPC server (keep-alive, basic auth) and the ZMQ publisher around one Chain."""

    def __init__(self, chain: Chain, user: str, password: str) -> None:
        self.chain = chain
        self.auth = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
        self.zmq_sock: Any = None
        self.zmq_seq = 0

    async def rpc(self, method: str, params: list[Any]) -> bytes:
        """The JSON text of the result (so the cached template is never re-encoded)."""
        c = self.chain
        if method == "getblocktemplate":
            request = params[0] if params and isinstance(params[0], dict) else {}
            poll = request.get("longpollid")
            if poll is not None and poll == c.longpollid:
                changed = c.changed
                try:
                    await asyncio.wait_for(changed.wait(), LONGPOLL_MAX_SECONDS)
                except TimeoutError:
                    pass
            return c.template_result()
        if method == "getblockchaininfo":
            result: Any = {"chain": "main", "blocks": c.height - 1, "headers": c.height - 1,
                           "bestblockhash": c.tip[::-1].hex(), "difficulty": c.difficulty(),
                           "initialblockdownload": False, "verificationprogress": 1.0, "pruned": False,
                           "warnings": ""}
        elif method == "getbestblockhash":
            result = c.tip[::-1].hex()
        elif method == "getblockcount":
            result = c.height - 1
        elif method == "getdifficulty":
            result = c.difficulty()
        elif method == "getblockheader":
            header = c.headers.get(str(params[0]) if params else "")
            if header is None:
                raise RpcError(-5, "Block not found")
            result = header
        elif method == "submitblock":
            c.submitted += 1
            result = "inconclusive"
        elif method == "benchnewtip":
            result = self.new_tip()
        elif method == "benchnexttip":  # what the next benchnewtip's notify will carry, to watch for it
            result = stratum_prevhash(c.next_tip())
        elif method == "benchstats":
            result = {"submitted": c.submitted, "tips": c.tips_published, "height": c.height}
        else:
            raise RpcError(-32601, "Method not found")
        return json.dumps(result).encode()

    def new_tip(self) -> dict[str, Any]:
        block_hash = self.chain.new_tip()
        announced = time.time()
        if self.zmq_sock is not None:
            self.zmq_sock.send_multipart([b"hashblock", bytes.fromhex(block_hash),
                                          struct.pack("<I", self.zmq_seq)])
            self.zmq_seq += 1
        self.chain.tips_published += 1
        return {"hash": block_hash, "height": self.chain.height - 1, "announced": announced,
                "prevhash_stratum": stratum_prevhash(self.chain.tip)}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                length = int(headers.get("content-length", "0"))
                if not 0 <= length <= MAX_BODY:
                    break
                body = await reader.readexactly(length)
                if headers.get("authorization", "").encode() != self.auth:
                    writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                writer.write(await self._answer(body))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:  # shutdown with a long poll parked: nothing to answer
            pass
        finally:
            writer.close()

    async def _answer(self, body: bytes) -> bytes:
        req_id: Any = None
        try:
            request = json.loads(body)
            req_id = request.get("id")
            params = request.get("params") or []
            result = await self.rpc(str(request.get("method")), params if isinstance(params, list) else [params])
            payload = b'{"result":' + result + b',"error":null,"id":' + json.dumps(req_id).encode() + b"}"
            status = b"200 OK"
        except RpcError as exc:
            payload = json.dumps({"result": None, "error": {"code": exc.code, "message": exc.message},
                                  "id": req_id}).encode()
            status = b"500 Internal Server Error"  # what bitcoind sends for an RPC error
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            payload = json.dumps({"result": None, "error": {"code": -32700, "message": str(exc)},
                                  "id": req_id}).encode()
            status = b"500 Internal Server Error"
        return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(payload)).encode() + b"\r\n\r\n" + payload)


def stratum_prevhash(prevhash: bytes) -> str:
    """The prevhash as ``mining.notify`` sends it (each 4-byte word of the internal order byte-swapped)."""
    return b"".join(prevhash[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


async def serve(empty: bool) -> None:
    import zmq
    import zmq.asyncio

    chain = Chain(load_block(), empty=empty)
    user, password = "bench", secrets.token_hex(12)
    node = Node(chain, user, password)
    ctx = zmq.asyncio.Context()
    node.zmq_sock = ctx.socket(zmq.PUB)
    node.zmq_sock.setsockopt(zmq.LINGER, 0)
    zmq_port = node.zmq_sock.bind_to_random_port("tcp://127.0.0.1")
    server = await asyncio.start_server(node.handle, "127.0.0.1", 0, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"rpc_url": f"http://127.0.0.1:{port}", "zmq": f"tcp://127.0.0.1:{zmq_port}", "user": user,
                      "password": password, "transactions": len(chain.entries), "height": chain.height,
                      "bits": f"{chain.block.bits:08x}", "difficulty": chain.difficulty()}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 4096) else None)
    await stop.wait()
    server.close()
    node.zmq_sock.close(0)
    ctx.term()


class MainnetNode:
    """Start the node as a child process (its own core share, like a real bitcoind) and talk to it."""

    def __init__(self, empty: bool = False) -> None:
        self.empty = empty
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> dict[str, Any]:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *(["--empty"] if self.empty else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("mainnet_node exited before listening")
        self.info = json.loads(line)
        return self.info

    def call(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(self.info["rpc_url"])
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            auth = base64.b64encode(f"{self.info['user']}:{self.info['password']}".encode()).decode()
            conn.request("POST", "/", json.dumps({"id": 1, "method": method, "params": list(params)}),
                         {"Authorization": f"Basic {auth}", "Content-Type": "application/json"})
            reply = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        if reply.get("error"):
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def new_tip(self) -> dict[str, Any]:
        return dict(self.call("benchnewtip"))

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--empty", action="store_true", help="serve the template without its transactions")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(serve(args.empty))
    except ImportError:
        asyncio.run(serve(args.empty))
    return 0


if __name__ == "__main__":
    sys.exit(main())
