"""Shared fixtures: a real regtest bitcoind (built by scripts/build-bitcoind.sh) and an in-process pool."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pool.node.regtest import BitcoindNotFound, RegtestNode, find_bitcoind_dir


def _bitcoind_dir() -> Path:
    try:
        return find_bitcoind_dir()
    except BitcoindNotFound as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test runs on uvloop, the loop ``pool run`` uses: its transports differ from asyncio's."""
    import uvloop

    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def bitcoind_dir() -> Path:
    return _bitcoind_dir()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """One throwaway PostgreSQL cluster for the whole run (skipped with the reason when PostgreSQL is not
    installed, except on CI, where it must be: scripts/setup.sh installs it)."""
    from tests.support.postgres import PostgresNotFound, start_cluster

    try:
        cluster = start_cluster()
    except PostgresNotFound as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_backend(request: pytest.FixtureRequest) -> str:
    """Run the test on both ledger backends."""
    return str(request.param)


class LedgerTargets:
    """Where a test's ledgers live: ``targets(name)`` is a new SQLite file or a new PostgreSQL database (its
    URL) per call; ``copy(source, name)`` duplicates a closed ledger (SQLite backup / PostgreSQL template)."""

    def __init__(self, backend: str, tmp_path: Path, cluster: Any) -> None:
        self.backend = backend
        self._tmp = tmp_path
        self._cluster = cluster
        self._made: list[str] = []

    @property
    def is_pg(self) -> bool:
        return self._cluster is not None

    def __call__(self, name: str = "ledger.sqlite3") -> Path | str:
        if self._cluster is None:
            return self._tmp / name
        url = self._cluster.create_database()
        self._made.append(url)
        return url

    def copy(self, source: Path | str, name: str) -> Path | str:
        if self._cluster is None:
            import sqlite3

            dst = self._tmp / name
            s, d = sqlite3.connect(source), sqlite3.connect(dst)
            try:
                s.backup(d)
            finally:
                s.close()
                d.close()
            return dst
        url = self._cluster.create_database(template=str(source).rsplit("/", 1)[1])
        self._made.append(url)
        return url

    def cleanup(self) -> None:
        for url in self._made:
            self._cluster.drop_database(url)


@pytest.fixture
def ledger_target(ledger_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LedgerTargets]:
    """Where the test's ledgers live, on the backend the test is parametrized with."""
    cluster = request.getfixturevalue("pg_cluster") if ledger_backend == "postgresql" else None
    targets = LedgerTargets(ledger_backend, tmp_path, cluster)
    yield targets
    targets.cleanup()
