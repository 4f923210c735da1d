"""A small Stratum V1 miner for tests, written independently of the pool's own code.

It rebuilds coinbase, merkle root and header from the notify fields with plain hashlib, exactly as a real
miner does, so a bug in the pool's encoders shows up as rejected shares instead of cancelling out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

DIFF1 = 0xFFFF * 2**208


def dsha(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


@dataclass
class NotifyJob:
    job_id: str
    prevhash: str
    coinb1: str
    coinb2: str
    branch: list[str]
    version: str
    nbits: str
    ntime: str
    clean: bool
    received: float = field(default_factory=time.monotonic)


class TestMiner:
    """Connects, handshakes, and mines shares on request. Every reply and notification is kept for asserts."""

    __test__ = False  # a helper, not a test class, wherever a test module imports it

    def __init__(self, host: str, port: int, username: str, password: str = "x", user_agent: str = "testminer/1.0"):
        self.host, self.port, self.username, self.password, self.user_agent = host, port, username, password, user_agent
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.extranonce1 = b""
        self.extranonce2_size = 0
        self.difficulty = 1.0
        self.job: NotifyJob | None = None
        self.jobs: list[NotifyJob] = []
        self.job_difficulty: dict[str, float] = {}
        self.notifications: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}
        self._next_id = 1
        self._waiters: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._job_event = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._en2_counter = 0
        self.accepted = 0
        self.rejected: list[Any] = []
        self.version_mask = 0
        self.local_host: str | None = None  # source address to connect from (any 127.0.0.0/8 on loopback)

    async def connect(self) -> None:
        local = (self.local_host, 0) if self.local_host else None
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, local_addr=local)
        self._reader_task = asyncio.create_task(self._read_loop())

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            try:
                await self._reader_task
            except (asyncio.CancelledError, Exception):
                pass

    async def _read_loop(self) -> None:
        assert self.reader is not None
        while True:
            line = await self.reader.readline()
            if not line:
                for fut in self._waiters.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("closed"))
                return
            msg = json.loads(line)
            if msg.get("method"):
                self.notifications.append(msg)
                self._on_notification(msg)
            else:
                self.replies[msg.get("id")] = msg
                fut = self._waiters.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    def _on_notification(self, msg: dict[str, Any]) -> None:
        method, params = msg["method"], msg["params"]
        if method == "mining.set_difficulty":
            self.difficulty = float(params[0])
        elif method == "mining.notify":
            job = NotifyJob(*params[:9])
            self.job = job
            self.jobs.append(job)
            self.job_difficulty[job.job_id] = self.difficulty
            self._job_event.set()

    async def request(self, method: str, params: list[Any], timeout: float = 10.0) -> dict[str, Any]:
        req_id = self._next_id
        self._next_id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[req_id] = fut
        await self.send({"id": req_id, "method": method, "params": params})
        return await asyncio.wait_for(fut, timeout)

    async def send(self, obj: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.write(json.dumps(obj).encode() + b"\n")
        await self.writer.drain()

    async def handshake(self, configure: bool = False) -> None:
        if configure:
            reply = await self.request(
                "mining.configure",
                [["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}],
            )
            if reply["result"].get("version-rolling"):
                self.version_mask = int(reply["result"]["version-rolling.mask"], 16)
        reply = await self.request("mining.subscribe", [self.user_agent])
        self.extranonce1 = bytes.fromhex(reply["result"][1])
        self.extranonce2_size = reply["result"][2]
        reply = await self.request("mining.authorize", [self.username, self.password])
        assert reply["result"] is True, reply

    async def wait_job(self, timeout: float = 10.0, newer_than: NotifyJob | None = None) -> NotifyJob:
        deadline = time.monotonic() + timeout
        while self.job is None or (newer_than is not None and self.job is newer_than):
            self._job_event.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no job")
            await asyncio.wait_for(self._job_event.wait(), remaining)
        return self.job

    def header_for(self, job: NotifyJob, extranonce2: bytes, ntime: int, nonce: int, version_bits: int = 0) -> bytes:
        coinbase = bytes.fromhex(job.coinb1) + self.extranonce1 + extranonce2 + bytes.fromhex(job.coinb2)
        root = dsha(coinbase)
        for h in job.branch:
            root = dsha(root + bytes.fromhex(h))
        ph = bytes.fromhex(job.prevhash)
        prevhash = b"".join(ph[i : i + 4][::-1] for i in range(0, 32, 4))
        version = int(job.version, 16) | version_bits
        return struct.pack("<I", version) + prevhash + root + struct.pack("<II", ntime, int(job.nbits, 16)) + struct.pack(
            "<I", nonce
        )

    def solve(self, job: NotifyJob, difficulty: float | None = None, max_tries: int = 2_000_000,
              version_bits: int = 0) -> tuple[bytes, int, int, bytes]:
        """Find (extranonce2, ntime, nonce, hash) meeting the difficulty; raises if unlucky beyond max_tries."""
        diff = difficulty if difficulty is not None else self.job_difficulty.get(job.job_id, self.difficulty)
        target = int(DIFF1 / diff)
        self._en2_counter += 1
        extranonce2 = self._en2_counter.to_bytes(self.extranonce2_size, "big")
        ntime = int(job.ntime, 16)
        base = self.header_for(job, extranonce2, ntime, 0, version_bits)[:76]
        for nonce in range(max_tries):
            h = dsha(base + struct.pack("<I", nonce))
            if int.from_bytes(h, "little") <= target:
                return extranonce2, ntime, nonce, h
        raise RuntimeError("no share found")

    async def submit(self, job: NotifyJob, extranonce2: bytes, ntime: int, nonce: int,
                     version_bits: int | None = None) -> dict[str, Any]:
        params = [self.username, job.job_id, extranonce2.hex(), f"{ntime:08x}", f"{nonce:08x}"]
        if version_bits is not None:
            params.append(f"{version_bits:08x}")
        reply = await self.request("mining.submit", params)
        if reply.get("result") is True:
            self.accepted += 1
        else:
            self.rejected.append(reply.get("error"))
        return reply

    async def mine_one(self, difficulty: float | None = None) -> tuple[dict[str, Any], bytes]:
        job = await self.wait_job()
        en2, ntime, nonce, h = self.solve(job, difficulty)
        return await self.submit(job, en2, ntime, nonce), h
