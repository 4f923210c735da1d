"""Commit: a ledger write's answer in a front-end, handed to its waiters at once and in order."""

from __future__ import annotations

import asyncio

import pytest

from pool.ledger.commit import Commit


def test_callbacks_run_at_the_answer_in_order_with_the_commit() -> None:
    commit = Commit()
    seen: list[tuple[str, object]] = []
    commit.add_done_callback(lambda c: seen.append(("a", c.result())))
    commit.add_done_callback(lambda c: seen.append(("b", c.exception())))
    assert not commit.done() and not seen
    commit.set_result(7)
    assert seen == [("a", 7), ("b", None)]  # synchronously: no loop turn between the answer and the reply
    commit.set_exception(RuntimeError("late"))  # a second answer is ignored
    assert commit.result() == 7


def test_a_failing_callback_does_not_keep_the_answer_from_the_others() -> None:
    commit = Commit()
    seen: list[BaseException | None] = []

    def broken(_: Commit) -> None:
        raise ValueError("bug in a waiter")

    commit.add_done_callback(broken)
    commit.add_done_callback(lambda c: seen.append(c.exception()))
    error = LookupError("not recorded")
    commit.set_exception(error)
    assert seen == [error]
    with pytest.raises(LookupError):
        commit.result()
    assert not commit.cancelled()


def test_result_before_the_answer_is_an_error() -> None:
    commit = Commit()
    with pytest.raises(asyncio.InvalidStateError):
        commit.result()
    with pytest.raises(asyncio.InvalidStateError):
        commit.exception()


async def test_awaitable_and_late_callbacks_run_soon_not_reentrantly() -> None:
    commit = Commit()
    asyncio.get_running_loop().call_later(0.01, commit.set_result, "committed")
    assert await asyncio.wait_for(commit, 5) == "committed"
    seen: list[str] = []
    commit.add_done_callback(lambda c: seen.append(c.result()))
    assert seen == []  # answered already: called on the next loop turn, like a future's callback
    await asyncio.sleep(0)
    assert seen == ["committed"]
    failed = Commit()
    failed.set_exception(RuntimeError("ledger down"))
    with pytest.raises(RuntimeError):
        await failed
