"""Leadership (pool.ledger.leader): work runs only while the lock is held, stops when it is lost, starts again
when it is won back; the SQLite flavour of the lock (flock) admits one holder at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pool.ledger.leader import FileLeaderLock, Leadership, lock_for
from pool.ledger.pg import PgTarget


class FakeLock:
    """A lock the test hands out and takes away."""

    def __init__(self) -> None:
        self.available = False
        self.held = False

    def try_acquire(self) -> bool:
        self.held = self.available
        return self.held

    def still_held(self) -> bool:
        return self.held and self.available

    def release(self) -> None:
        self.held = False


async def _until(check, timeout: float = 5.0) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_work_runs_only_while_leading():
    lock = FakeLock()
    leadership = Leadership(lock, retry=0.01, check=0.01)
    running: list[bool] = []
    starts = 0

    async def work() -> None:
        nonlocal starts
        starts += 1
        running.append(True)
        try:
            await asyncio.Event().wait()
        finally:
            running.pop()

    holder = asyncio.create_task(leadership.run())
    gated = asyncio.create_task(leadership.gated(work)())
    try:
        await asyncio.sleep(0.1)
        assert starts == 0 and not leadership.leading  # someone else holds it
        lock.available = True
        await _until(lambda: running)
        assert leadership.leading and starts == 1
        lock.available = False  # the session is gone
        await _until(lambda: not running)
        assert not leadership.leading
        lock.available = True
        await _until(lambda: running)
        assert starts == 2
    finally:
        gated.cancel()
        holder.cancel()
        await asyncio.gather(gated, holder, return_exceptions=True)
    assert not lock.held  # released on the way out


async def test_work_error_reaches_the_supervisor():
    lock = FakeLock()
    lock.available = True
    leadership = Leadership(lock, retry=0.01, check=0.01)

    async def work() -> None:
        raise RuntimeError("maturity broke")

    holder = asyncio.create_task(leadership.run())
    try:
        with pytest.raises(RuntimeError, match="maturity broke"):
            await asyncio.wait_for(leadership.gated(work)(), 5)
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)


def test_file_lock_admits_one_holder(tmp_path: Path):
    a, b = FileLeaderLock(tmp_path / "ledger.sqlite3.leader"), FileLeaderLock(tmp_path / "ledger.sqlite3.leader")
    assert a.try_acquire() and a.still_held()
    assert not b.try_acquire()
    a.release()
    assert b.try_acquire()
    b.release()
    assert isinstance(lock_for(tmp_path / "ledger.sqlite3"), FileLeaderLock)
    assert not isinstance(lock_for(PgTarget("postgresql://pool@h/db")), FileLeaderLock)
