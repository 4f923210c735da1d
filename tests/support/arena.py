"""The arena of the hostile-client tests: a live pool on regtest with an honest miner mining beside the abuse.

After each kind of abuse the honest miner must have had no share refused for any reason but a stale job (21,
right after a block), must still be answered, and a new well-behaved miner must be able to connect and mine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.conftest import pool_config
from tests.support import live
from tests.support import miner as support_miner
from tests.support.chain import (
    arpc,
    bits_target,
    connect_miner,
    share_target,
    solve_where,
    wait_until,
)
from tests.support.firmware import FirmwareClient

DIFF_MAX = 1e-7
ERR_OTHER = 20
ERR_STALE = 21
ERR_LOW_DIFF = 23
ERR_UNAUTHORIZED = 24
ERR_NOT_SUBSCRIBED = 25


# ---- the honest miner and the arena ------------------------------------------------------------------------

class Honest:
    """A TestMiner mining continuously (one share every ``pace`` seconds) at the difficulty the pool sets.

    With ``blocks`` false it submits only shares that are not blocks (the pool's difficulty must then lie below
    the network's), so the chain and the mempool stay as a test set them up.
    """

    def __init__(self, miner: support_miner.TestMiner, pace: float = 0.1, blocks: bool = True) -> None:
        self.miner = miner
        self.pace = pace
        self.blocks = blocks
        self.replies: list[dict[str, Any]] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="honest-miner")

    async def _run(self) -> None:
        for _ in range(100_000):  # bounded; a test stops it long before
            if self._stop.is_set():
                return
            job = self.miner.job
            assert job is not None
            en2, ntime, nonce, _ = self.miner.solve(job) if self.blocks else self._solve_no_block(job)
            self.replies.append(await self.miner.submit(job, en2, ntime, nonce))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.pace)

    def _solve_no_block(self, job: support_miner.NotifyJob) -> tuple[bytes, int, int, bytes]:
        share = share_target(self.miner.job_difficulty.get(job.job_id, self.miner.difficulty))
        block = bits_target(job.nbits)
        assert share > block, "shares that are not blocks need a pool difficulty below the network's"
        return solve_where(self.miner, job, lambda h: block < h <= share)

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.replies if r.get("result") is True)

    @property
    def refused(self) -> list[dict[str, Any]]:
        """Replies that refused a valid share for another reason than a stale job."""
        return [r for r in self.replies if r.get("result") is not True and (r.get("error") or [None])[0] != ERR_STALE]

    def alive(self) -> None:
        if self._task is not None and self._task.done() and not self._stop.is_set():
            self._task.result()  # re-raises what killed it (e.g. a reply that never came)
            raise AssertionError("the honest miner stopped")

    async def progress(self, shares: int = 2, timeout: float = 10.0) -> None:
        """The pool keeps answering: ``shares`` more accepted shares within ``timeout``."""
        target = self.accepted + shares

        def moved() -> bool:
            self.alive()
            return self.accepted >= target

        await wait_until(moved, timeout, what=f"{shares} more accepted honest shares")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)


class Arena:
    def __init__(self, app, regtest, honest: Honest, user: str) -> None:
        self.app = app
        self.regtest = regtest
        self.honest = honest
        self.user = user
        self.port = app.server.port
        self.start_height = 0

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        # The merged registry /metrics renders: every Stratum process's figures (at most a second old).
        return live.metric_now(self.app, name, labels) or 0.0

    async def metric_fresh(self, name: str, labels: dict[str, str] | None = None) -> float:
        """``metric`` after asking every Stratum process for its figures of now (as a scrape does)."""
        await self.app.refresh_live()
        return self.metric(name, labels)

    async def client(self, name: str) -> FirmwareClient:
        return await FirmwareClient(name).connect(self.port)

    async def handshake(self, fw: FirmwareClient, first_id: int = 1) -> tuple[bytes, int]:
        await fw.send_lines([
            f'{{"id": {first_id}, "method": "mining.subscribe", "params": ["hostile/0.1"]}}',
            f'{{"id": {first_id + 1}, "method": "mining.authorize", "params": ["{self.user}.bad", "x"]}}',
        ])
        sub = await fw.reply(first_id)
        assert (await fw.reply(first_id + 1))["result"] is True
        return bytes.fromhex(sub["result"][1]), sub["result"][2]

    async def finish(self, new_connection: bool = True) -> None:
        """The honest miner was served throughout; a new well-behaved miner still gets in."""
        await self.honest.progress(2)
        await self.honest.stop()
        assert self.honest.refused == [], self.honest.refused
        assert self.honest.accepted >= 3
        assert self.app.coordinator.blocks_found >= self.honest.accepted  # every share is a block here
        assert await arpc(self.regtest, "getblockcount") > self.start_height
        if new_connection:
            await self.newcomer_mines()

    async def newcomer_mines(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        for _ in range(100):  # refused while the per-IP connect bucket refills: retry, bounded
            if time.monotonic() > deadline:
                break
            miner = None
            try:
                miner = await connect_miner(self.port, f"{self.user}.newcomer", timeout=3)
                for _ in range(5):  # a block by the honest miner can make one share stale
                    reply, _ = await miner.mine_one()
                    if reply.get("result") is True:
                        return
                    assert reply["error"][0] == ERR_STALE, reply
                raise AssertionError("newcomer's shares stayed stale")
            except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(0.2)
            finally:
                if miner is not None:
                    await miner.close()
        raise AssertionError(f"a well-behaved miner could not connect and mine: {last!r}")


@contextlib.asynccontextmanager
async def arena_on(regtest, data_dir: Path, honest_blocks: bool = True, **overrides: dict) -> AsyncIterator[Arena]:
    from pool.app import PoolApp

    difficulty = {"max": DIFF_MAX, **overrides.pop("difficulty", {})}
    cfg = await asyncio.to_thread(pool_config, regtest, data_dir, difficulty=difficulty, **overrides)
    app = PoolApp(cfg)
    await app.start()
    honest = None
    try:
        user = await arpc(regtest, "getnewaddress", wallet="pool")
        miner = await connect_miner(app.server.port, f"{user}.honest")
        honest = Honest(miner, blocks=honest_blocks)
        arena = Arena(app, regtest, honest, user)
        arena.start_height = await arpc(regtest, "getblockcount")
        honest.start()
        await honest.progress(2)
        yield arena
    finally:
        if honest is not None:
            with contextlib.suppress(Exception):
                await honest.stop()
            await honest.miner.close()
        await app.stop()


def error_code(reply: dict[str, Any]) -> int | None:
    err = reply.get("error")
    return err[0] if isinstance(err, list) and err else None


