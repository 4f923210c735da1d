"""The tests' event loop is the production one."""

from __future__ import annotations

import asyncio

import uvloop


async def test_async_tests_run_on_uvloop() -> None:
    """``pool run`` serves miners on uvloop, whose transports are not asyncio's classes: in-process integration
    tests must exercise the same loop (see ``pytest_asyncio_loop_factories`` in tests/conftest.py)."""
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
