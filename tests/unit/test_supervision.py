"""Background work never dies silently: the task supervisor, and the ledger writer thread's death.

The supervisor is exercised with small coroutines that fail on purpose (pure supervision logic); the ledger
tests use the real SQLite ledger with a failure injected into its writer thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from pool.ledger.sqlite import Ledger, LedgerFailed, ShareRecord
from pool.ops.supervise import Supervisor


def share(i: int) -> ShareRecord:
    return ShareRecord(ts=time.time(), address="bcrt1qaddressaaaa", worker="w", difficulty=1.0,
                       share_difficulty=2.0, job_id="1", height=101, block_hash=f"{i:064x}", is_block=False)


async def wait_for_condition(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ---- supervisor --------------------------------------------------------------------------------------------


async def test_failing_task_is_logged_counted_and_restarted():
    runs: list[int] = []
    failures: list[tuple[str, str]] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) <= 2:
            raise RuntimeError(f"boom {len(runs)}")
        await asyncio.Event().wait()  # third run stays up

    sup = Supervisor(on_failure=lambda name, exc: failures.append((name, str(exc))), initial_backoff=0.01,
                     stable_after=0.05)
    state = sup.start("flaky", flaky)
    try:
        await wait_for_condition(lambda: len(runs) == 3)
        assert failures == [("flaky", "boom 1"), ("flaky", "boom 2")]
        assert state.failures == 2 and "boom 2" in state.last_error
        await wait_for_condition(lambda: not sup.down())  # up again once the restart has lasted
        assert not state.task.done()
    finally:
        await sup.stop()
    assert state.task.cancelled()


async def test_down_names_the_task_while_it_waits_to_restart():
    async def broken() -> None:
        raise OSError("Invalid argument")

    sup = Supervisor(initial_backoff=30.0)
    sup.start("template-zmq", broken)
    sup.start("optional", broken, required=False)
    try:
        await wait_for_condition(lambda: bool(sup.down()))
        down = sup.down()
        assert len(down) == 1 and "template-zmq" in down[0] and "Invalid argument" in down[0]
    finally:
        await sup.stop()


async def test_one_failing_loop_does_not_stop_its_siblings():
    ticks = [0]

    async def steady() -> None:
        while True:
            ticks[0] += 1
            await asyncio.sleep(0.005)

    async def dies() -> None:
        raise ValueError("bad endpoint")

    sup = Supervisor(initial_backoff=0.02)
    sup.start("steady", steady)
    dying = sup.start("dies", dies)
    try:
        await wait_for_condition(lambda: dying.failures >= 3)
        before = ticks[0]
        await asyncio.sleep(0.05)
        assert ticks[0] > before
    finally:
        await sup.stop()


async def test_backoff_grows_to_the_cap():
    starts: list[float] = []

    async def dies() -> None:
        starts.append(time.monotonic())
        raise RuntimeError("again")

    sup = Supervisor(initial_backoff=0.01, max_backoff=0.04)
    sup.start("dies", dies)
    try:
        await wait_for_condition(lambda: len(starts) >= 6)
    finally:
        await sup.stop()
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert gaps[1] >= gaps[0] * 1.5  # doubling
    assert all(g >= 0.035 for g in gaps[3:])  # at the cap


async def test_a_task_that_returns_is_restarted_too():
    runs = [0]

    async def returns() -> None:
        runs[0] += 1

    sup = Supervisor(initial_backoff=0.01)
    state = sup.start("returns", returns)
    try:
        await wait_for_condition(lambda: runs[0] >= 2)
        assert state.last_error == "returned"
    finally:
        await sup.stop()


# ---- the ledger writer thread ---------------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path):
    led = Ledger(tmp_path / "ledger.sqlite3")
    yield led
    led.close()


async def test_dead_writer_fails_every_waiting_and_later_write(ledger: Ledger):
    """A writer that dies outside the per-op savepoints must not leave `await committed` hanging."""
    assert await asyncio.wait_for(ledger.record_share(share(1)), 5) >= 1
    inside = threading.Event()
    release = threading.Event()
    real_commit = ledger._commit

    def dying_commit(conn, batch):
        inside.set()
        release.wait(5)
        raise MemoryError("injected writer failure")

    ledger._commit = dying_commit  # type: ignore[method-assign]
    died: list[BaseException] = []
    ledger.on_failure = died.append
    in_hand = ledger.record_share(share(2))
    await asyncio.to_thread(inside.wait, 5)
    queued = [ledger.record_share(share(i)) for i in range(3, 8)]  # waiting behind the failing batch
    release.set()
    for future in [in_hand, *queued]:
        with pytest.raises(LedgerFailed):
            await asyncio.wait_for(future, 5)
    assert isinstance(ledger.failure, MemoryError)
    assert len(died) == 1 and isinstance(died[0], MemoryError)
    later = ledger.record_share(share(9))
    with pytest.raises(LedgerFailed, match="writer stopped"):
        await asyncio.wait_for(later, 5)
    ledger._commit = real_commit  # type: ignore[method-assign]
    assert ledger.query("SELECT COUNT(*) FROM shares")[0][0] == 1


async def test_failing_commit_hook_neither_fails_shares_nor_stops_the_writer(ledger: Ledger):
    """A bug in the metrics hook after the COMMIT: the batch is answered with what really happened, and the
    writer carries on (a metrics hook must not stop every later share from being recorded)."""

    def bad_hook(size: int, seconds: float) -> None:
        raise RuntimeError("hook bug")

    ledger.on_commit = bad_hook
    first = await asyncio.wait_for(ledger.record_share(share(1)), 5)
    assert first >= 1  # committed: answered with its id, not an error
    second = await asyncio.wait_for(ledger.record_share(share(2)), 5)
    assert second > first
    assert ledger.failure is None
    assert ledger.query("SELECT COUNT(*) FROM shares")[0][0] == 2


async def test_stop_cancels_again_when_a_cancellation_was_lost():
    """Python 3.11's wait_for can swallow a cancel: shutdown must not hang on such a task."""
    swallowed = [0]

    async def loses_one_cancel() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed[0]:
                    raise
                swallowed[0] += 1

    sup = Supervisor()
    state = sup.start("loses-one-cancel", loses_one_cancel)
    await asyncio.sleep(0)
    await asyncio.wait_for(sup.stop(timeout=5), 5)
    assert swallowed[0] == 1 and state.task.cancelled()


async def test_stop_is_bounded_for_a_task_that_never_yields_to_cancel():
    async def immortal() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    sup = Supervisor()
    state = sup.start("immortal", immortal)
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio.wait_for(sup.stop(timeout=0.3), 5)
    assert time.monotonic() - started < 3
    assert not state.task.done()
    state.task.cancel()  # let the test's loop close: this one stays stubborn, so drop it
    state.task.get_coro().close()
