"""Raw-socket Stratum V1 clients that speak like real firmware, and a hashlib header builder.

``FirmwareClient`` writes the exact lines a firmware writes (its id style, key order and spacing, several
requests in one TCP write where the firmware does not wait) and keeps every line the pool sends, in order, so
tests can check what a firmware would see: which line came first, which reply answered which request, which
difficulty was in force when each job arrived. Nothing here imports the pool: header, coinbase and merkle root
are rebuilt from the notify fields with plain ``hashlib``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DIFF1 = 0xFFFF * 2**208
MAX_TARGET = 2**256 - 1


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def bits_target(nbits_hex: str) -> int:
    bits = int(nbits_hex, 16)
    return (bits & 0x7FFFFF) << (8 * ((bits >> 24) - 3))


def share_target(difficulty: float) -> int:
    return min(int(DIFF1 / difficulty), MAX_TARGET)


def id_key(value: Any) -> tuple[str, str]:
    """A request/reply id with its JSON type: 1, "1" and null are three different ids."""
    kind = "null" if value is None else "bool" if isinstance(value, bool) else type(value).__name__
    return kind, json.dumps(value)


@dataclass
class Job:
    """One ``mining.notify`` and the difficulty that was in force when it arrived."""

    job_id: Any
    prevhash: str
    coinb1: str
    coinb2: str
    branch: list[str]
    version: int
    nbits: str
    ntime: str
    clean: bool
    difficulty: float | None
    index: int  # position among all lines received

    @property
    def prevhash_display(self) -> str:
        """The previous block hash as bitcoind prints it."""
        words = bytes.fromhex(self.prevhash)
        internal = b"".join(words[i : i + 4][::-1] for i in range(0, 32, 4))
        return internal[::-1].hex()


def build_header(job: Job, extranonce1: bytes, extranonce2: bytes, ntime: int, nonce: int, version: int) -> bytes:
    """The 80-byte header a miner hashes for this job (independent of the pool's encoders)."""
    coinbase = bytes.fromhex(job.coinb1) + extranonce1 + extranonce2 + bytes.fromhex(job.coinb2)
    root = dsha(coinbase)
    for h in job.branch:
        root = dsha(root + bytes.fromhex(h))
    words = bytes.fromhex(job.prevhash)
    prevhash = b"".join(words[i : i + 4][::-1] for i in range(0, 32, 4))
    return (
        struct.pack("<I", version & 0xFFFFFFFF)
        + prevhash
        + root
        + struct.pack("<I", ntime)
        + struct.pack("<I", int(job.nbits, 16))
        + struct.pack("<I", nonce)
    )


@dataclass
class Solution:
    extranonce2: bytes
    ntime: int
    nonce: int
    version: int
    hash: bytes  # internal byte order

    @property
    def block_hash(self) -> str:
        return self.hash[::-1].hex()


def grind(job: Job, extranonce1: bytes, extranonce2: bytes, version: int,
          accept: Callable[[int], bool], max_tries: int = 3_000_000, start_nonce: int = 0) -> Solution:
    """Walk nonces until ``accept(hash as little-endian int)``; raises after ``max_tries``."""
    ntime = int(job.ntime, 16)
    base = build_header(job, extranonce1, extranonce2, ntime, 0, version)[:76]
    for nonce in range(start_nonce, start_nonce + max_tries):
        h = dsha(base + struct.pack("<I", nonce))
        if accept(int.from_bytes(h, "little")):
            return Solution(extranonce2, ntime, nonce, version, h)
    raise RuntimeError(f"no nonce found in {max_tries} tries")


def solve_block(job: Job, extranonce1: bytes, extranonce2: bytes, version: int,
                difficulty: float) -> Solution:
    """A share at ``difficulty`` that also meets the job's network target (on regtest that is nearly free)."""
    target = min(share_target(difficulty), bits_target(job.nbits))
    return grind(job, extranonce1, extranonce2, version, lambda v: v <= target)


def solve_low(job: Job, extranonce1: bytes, extranonce2: bytes, version: int, difficulty: float) -> Solution:
    """A header that misses the share target (and is no block): what a miner with a broken hasher submits.

    The pool rightly takes any hash that meets the network target as a block, whatever the share target; on
    regtest that target is easier than most share targets, so a "low" share must miss both.
    """
    target = max(share_target(difficulty), bits_target(job.nbits))
    return grind(job, extranonce1, extranonce2, version, lambda v: v > target)


def roll_bits(mask: int) -> int:
    """Version bits a rolling miner would set: the lowest and the highest bit of its mask."""
    if not mask:
        return 0
    low = mask & -mask
    high = 1 << (mask.bit_length() - 1)
    return low | high


class FirmwareClient:
    """One TCP connection that behaves like a given firmware; records every line it receives."""

    def __init__(self, name: str, answer_version: str | None = None) -> None:
        self.name = name
        self.answer_version = answer_version  # firmware that answers client.get_version, with its string
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.lines: list[dict[str, Any]] = []  # every message received, in order
        self.raw_lines: list[bytes] = []
        self.sent: list[dict[str, Any]] = []  # every request sent (parsed), in order
        self.eof = False
        self.eof_at: float | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.bytes_sent = 0

    # ---- connection --------------------------------------------------------------------------------------

    async def connect(self, port: int, timeout: float = 5.0) -> FirmwareClient:
        # A get_transactions answer is one line of about 67 bytes per transaction: above asyncio's 64 KiB default.
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 20), timeout
        )
        self._task = asyncio.create_task(self._read_loop(), name=f"fw-{self.name}")
        return self

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - closing a possibly reset socket
                pass
        if self._task is not None:
            self._task.cancel()
            try:
                await asyncio.wait_for(self._task, 2)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001
                pass

    async def _read_loop(self) -> None:
        assert self.reader is not None
        try:
            while True:
                line = await self.reader.readline()
                if not line:
                    break
                self.raw_lines.append(line)
                msg = json.loads(line)
                self.lines.append(msg)
                if (self.answer_version is not None and msg.get("method") == "client.get_version"
                        and msg.get("id") is not None):
                    await self.send_line(
                        json.dumps({"id": msg["id"], "result": self.answer_version, "error": None}), record=False
                    )
                self._changed.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.eof_at = time.monotonic()
            self._changed.set()

    # ---- sending -----------------------------------------------------------------------------------------

    async def send_line(self, text: str, record: bool = True) -> None:
        await self.send_lines([text], record=record)

    async def send_lines(self, texts: list[str], record: bool = True) -> None:
        """Several lines in ONE write, the way firmware that does not wait for replies puts them on the wire."""
        assert self.writer is not None
        if record:
            for text in texts:
                self.sent.append(json.loads(text))
        data = "".join(t + "\n" for t in texts).encode()
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()

    async def send_raw(self, data: bytes) -> None:
        assert self.writer is not None
        if self.writer.is_closing():  # the pool closed us (uvloop raises RuntimeError on such a write)
            raise ConnectionResetError("connection closed by the pool")
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()

    # ---- waiting -----------------------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Until ``check()`` is truthy (returns its value); TimeoutError naming ``what``. Bounded."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            value = check()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: timed out after {timeout}s waiting for {what}; "
                                   f"received {self.raw_lines[-6:]}")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                pass

    def replies(self, req_id: Any) -> list[dict[str, Any]]:
        key = id_key(req_id)
        return [m for m in self.lines if "method" not in m and id_key(m.get("id")) == key]

    def reply_index(self, req_id: Any, nth: int = 0) -> int:
        key = id_key(req_id)
        seen = 0
        for i, m in enumerate(self.lines):
            if "method" not in m and id_key(m.get("id")) == key:
                if seen == nth:
                    return i
                seen += 1
        return -1

    async def reply(self, req_id: Any, nth: int = 0, timeout: float = 5.0) -> dict[str, Any]:
        """The ``nth`` reply carrying ``req_id`` (same JSON type); firmware like cpuminer reuses one id."""
        def found() -> dict[str, Any] | None:
            got = self.replies(req_id)
            if len(got) > nth:
                return got[nth]
            if self.eof:
                raise ConnectionError(f"{self.name}: connection closed before reply #{nth} to id {req_id!r}; "
                                      f"received {self.raw_lines[-6:]}")
            return None
        return await self.wait_for(found, timeout, f"reply #{nth} to id {req_id!r}")

    async def wait_eof(self, timeout: float) -> None:
        await self.wait_for(lambda: self.eof, timeout, "the pool to close the connection")

    # ---- what the pool sent ------------------------------------------------------------------------------

    def notifications(self, method: str) -> list[tuple[int, dict[str, Any]]]:
        return [(i, m) for i, m in enumerate(self.lines) if m.get("method") == method]

    def jobs(self) -> list[Job]:
        """Every notify with the difficulty in force for it (the last set_difficulty before it)."""
        out: list[Job] = []
        difficulty: float | None = None
        for i, m in enumerate(self.lines):
            if m.get("method") == "mining.set_difficulty":
                difficulty = float(m["params"][0])
            elif m.get("method") == "mining.notify":
                p = m["params"]
                out.append(Job(p[0], p[1], p[2], p[3], list(p[4]), int(p[5], 16), p[6], p[7], bool(p[8]),
                               difficulty, i))
        return out

    async def wait_job(self, timeout: float = 5.0, after: int = -1) -> Job:
        """The newest job received after line index ``after``."""
        def newest() -> Job | None:
            jobs = [j for j in self.jobs() if j.index > after]
            return jobs[-1] if jobs else None
        return await self.wait_for(newest, timeout, f"a mining.notify after line {after}")

    def check_reply_ids(self) -> None:
        """Every request with an id got exactly one reply with that id, of the same JSON type, and nothing else.

        Requests with id null are JSON-RPC notifications and are not counted here.
        """
        asked = Counter(id_key(r.get("id")) for r in self.sent if r.get("id") is not None)
        answered = Counter(id_key(m.get("id")) for m in self.lines if "method" not in m and m.get("id") is not None)
        assert answered == asked, f"{self.name}: requests {dict(asked)} but replies {dict(answered)}"

