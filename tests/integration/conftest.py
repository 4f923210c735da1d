"""Every integration test leaves ledgers behind; each one must still pass ``pool audit verify``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pool.reports import audit_verify


@pytest.fixture(autouse=True)
def ledgers_verify(tmp_path: Path) -> Iterator[None]:
    """After the test (and its pool) is done: every SQLite ledger under its temp dir has an intact audit chain
    and every block balances (credits + fee = reward), as ``pool audit verify`` checks."""
    yield
    for ledger in sorted(tmp_path.rglob("ledger.sqlite3")):
        ok, message = audit_verify(ledger)
        assert ok, f"{ledger}: {message}"
