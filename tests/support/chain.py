"""Chain-side helpers for integration tests: bounded waits on bitcoind, batch RPC, coinbase decoding.

Written against bitcoind's RPC and plain byte layouts only, not the pool's own encoders, so a pool bug cannot
cancel out in the checks.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import urllib.request
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from tests.support.miner import NotifyJob, TestMiner

DIFF1 = 0xFFFF * 2**208
COIN = 100_000_000


async def arpc(node: Any, method: str, *params: object, wallet: str | None = None) -> Any:
    """``node.rpc`` off the event loop."""
    return await asyncio.to_thread(node.rpc, method, *params, wallet=wallet)


def batch_rpc(node: Any, calls: list[tuple[str, list[Any]]], wallet: str | None = None,
              timeout: float = 120.0) -> list[Any]:
    """One JSON-RPC batch (a JSON array of requests) over one HTTP request; raises on the first error."""
    url = node.rpc_url + (f"/wallet/{wallet}" if wallet else "/")
    body = json.dumps(
        [{"jsonrpc": "1.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)],
        default=str,  # Decimal amounts as exact strings (bitcoind accepts them)
    ).encode()
    auth = base64.b64encode(f"{node.user}:{node.password}".encode()).decode()
    req = urllib.request.Request(url, data=body, headers={"Authorization": f"Basic {auth}",
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        replies = json.loads(resp.read(), parse_float=Decimal)
    by_id = {r["id"]: r for r in replies}
    out = []
    for i, (method, _) in enumerate(calls):
        reply = by_id[i]
        if reply.get("error"):
            raise RuntimeError(f"batch {method} #{i} failed: {reply['error']}")
        out.append(reply["result"])
    return out


async def wait_until(check: Callable[[], Awaitable[bool]] | Callable[[], bool], timeout: float,
                     interval: float = 0.05, what: str = "condition") -> None:
    """Poll ``check`` (sync or async) until true; TimeoutError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_tip(node: Any, block_hash: str, timeout: float = 10.0) -> None:
    """Wait until bitcoind's best block is ``block_hash`` (display hex)."""
    last: list[str] = [""]

    async def at_tip() -> bool:
        last[0] = await arpc(node, "getbestblockhash")
        return last[0] == block_hash

    try:
        await wait_until(at_tip, timeout, what=f"tip {block_hash}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; bitcoind tip is {last[0]}") from None


def stratum_prevhash_for(block_hash: str) -> str:
    """Stratum notify prevhash for a display-hex block hash: internal order, each 4-byte word byte-swapped."""
    internal = bytes.fromhex(block_hash)[::-1]
    return b"".join(internal[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


def display_hash(internal_hash: bytes) -> str:
    return internal_hash[::-1].hex()


async def wait_job_on(miner: TestMiner, tip: str, timeout: float = 10.0, clean: bool | None = None) -> NotifyJob:
    """The first notify (oldest first) built on ``tip`` (display hex), optionally with the given clean flag."""
    want = stratum_prevhash_for(tip)
    found: list[NotifyJob] = []

    def seen() -> bool:
        for job in miner.jobs:
            if job.prevhash == want and (clean is None or job.clean is clean):
                found.append(job)
                return True
        return False

    await wait_until(seen, timeout, interval=0.002, what=f"notify on {tip} (clean={clean})")
    return found[0]


def latest_job_on(miner: TestMiner, tip: str) -> NotifyJob | None:
    want = stratum_prevhash_for(tip)
    for job in reversed(miner.jobs):
        if job.prevhash == want:
            return job
    return None


def solve_where(miner: TestMiner, job: NotifyJob, accept: Callable[[int], bool],
                max_tries: int = 200_000) -> tuple[bytes, int, int, bytes]:
    """(extranonce2, ntime, nonce, hash) whose hash (as an integer) satisfies ``accept``."""
    miner._en2_counter += 1
    en2 = miner._en2_counter.to_bytes(miner.extranonce2_size, "big")
    ntime = int(job.ntime, 16)
    for nonce in range(max_tries):
        header = miner.header_for(job, en2, ntime, nonce)
        h = hashlib.sha256(hashlib.sha256(header).digest()).digest()
        if accept(int.from_bytes(h, "little")):
            return en2, ntime, nonce, h
    raise RuntimeError("no nonce found")


def bits_target(nbits_hex: str) -> int:
    bits = int(nbits_hex, 16)
    return (bits & 0x7FFFFF) << (8 * ((bits >> 24) - 3))


def share_target(difficulty: float) -> int:
    return min(int(DIFF1 / difficulty), 2**256 - 1)


def bip34_height(script_sig: bytes) -> int:
    """Decode the block height a BIP34 coinbase scriptSig starts with (OP_1..OP_16 or a minimal push)."""
    first = script_sig[0]
    if 0x51 <= first <= 0x60:
        return first - 0x50
    if first == 0x00:
        return 0
    if not 1 <= first <= 8:
        raise ValueError(f"scriptSig does not start with a number push: {script_sig[:9].hex()}")
    number = script_sig[1 : 1 + first]
    if len(number) != first:
        raise ValueError("truncated height push")
    if number[-1] & 0x80:
        raise ValueError("negative height")
    return int.from_bytes(number, "little")


def expected_height_push(height: int) -> bytes:
    """The minimal BIP34 encoding bitcoind itself uses (CScript() << nHeight)."""
    if height == 0:
        return b"\x00"
    if 1 <= height <= 16:
        return bytes([0x50 + height])
    out = bytearray()
    value = height
    while value:
        out.append(value & 0xFF)
        value >>= 8
    if out[-1] & 0x80:
        out.append(0)
    return bytes([len(out)]) + bytes(out)


def sats(value: Decimal | float | int) -> int:
    return int((Decimal(str(value)) * COIN).to_integral_value())


def subsidy(height: int, halving_interval: int = 150) -> int:
    """Regtest block subsidy (halving every 150 blocks)."""
    halvings = height // halving_interval
    return 0 if halvings >= 64 else (50 * COIN) >> halvings


async def check_pool_coinbase(node: Any, block_hash: str, pool_address: str) -> dict[str, Any]:
    """Assert the block's coinbase pays ``pool_address`` subsidy + fees and carries the BIP34 height.

    Returns the block (``getblock`` verbosity 2) for further checks.
    """
    block = await arpc(node, "getblock", block_hash, 2)
    info = await arpc(node, "getaddressinfo", pool_address, wallet="pool")
    pool_spk = info["scriptPubKey"]
    cb = block["tx"][0]
    script_sig = bytes.fromhex(cb["vin"][0]["coinbase"])
    height = block["height"]
    assert bip34_height(script_sig) == height, (script_sig.hex(), height)
    assert script_sig.startswith(expected_height_push(height)), (script_sig.hex(), height)
    fees = sum(sats(tx["fee"]) for tx in block["tx"][1:])
    expected = subsidy(height) + fees
    paying = [o for o in cb["vout"] if o["scriptPubKey"]["hex"] == pool_spk]
    assert len(paying) == 1, cb["vout"]
    assert sats(paying[0]["value"]) == expected, (paying[0]["value"], expected, fees)
    others = [o for o in cb["vout"] if o["scriptPubKey"]["hex"] != pool_spk]
    assert all(sats(o["value"]) == 0 for o in others), others
    assert sum(sats(o["value"]) for o in cb["vout"]) == expected
    return block


M = TypeVar("M", bound=TestMiner)


async def connect_miner(port: int, username: str, password: str = "x", timeout: float = 10.0) -> TestMiner:
    """A TestMiner on 127.0.0.1:port, handshaken and holding a job."""
    return await ready_miner(TestMiner("127.0.0.1", port, username, password), timeout)


async def ready_miner(miner: M, timeout: float = 10.0) -> M:
    """Connect ``miner`` (a TestMiner or a subclass), handshake and wait for its first job; closed on failure."""
    await asyncio.wait_for(miner.connect(), timeout)
    try:
        await asyncio.wait_for(miner.handshake(), timeout)
        await miner.wait_job(timeout)
    except BaseException:
        await miner.close()
        raise
    return miner


async def mine_block_on(miner: TestMiner, tip: str, timeout: float = 10.0) -> tuple[dict[str, Any], str, NotifyJob]:
    """Wait for work on ``tip``, solve a share that is also a block, submit it; (reply, block hash, job)."""
    await wait_job_on(miner, tip, timeout)
    job = latest_job_on(miner, tip)
    assert job is not None
    difficulty = miner.job_difficulty.get(job.job_id, miner.difficulty)
    target = min(share_target(difficulty), bits_target(job.nbits))
    en2, ntime, nonce, h = solve_where(miner, job, lambda v: v <= target)
    reply = await miner.submit(job, en2, ntime, nonce)
    return reply, display_hash(h), job
