"""Fixtures shared by the integration tests: the hostile-client arena, and the check that every ledger a test
leaves behind still passes ``pool audit verify``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pool.reports import audit_verify
from tests.support.arena import Arena, arena_on


@pytest.fixture
async def arena(regtest, tmp_path: Path) -> AsyncIterator[Arena]:  # noqa: ANN001
    """A live pool on the module's regtest node with an honest miner mining beside the test's abuse."""
    async with arena_on(regtest, tmp_path / "pool") as a:
        yield a


@pytest.fixture(autouse=True)
def ledgers_verify(tmp_path: Path) -> Iterator[None]:
    """After the test (and its pool) is done: every SQLite ledger under its temp dir has an intact audit chain
    and every block balances (credits + fee = reward), as ``pool audit verify`` checks."""
    yield
    for ledger in sorted(tmp_path.rglob("ledger.sqlite3")):
        ok, message = audit_verify(ledger)
        assert ok, f"{ledger}: {message}"
