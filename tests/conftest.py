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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With POOL_TEST_PROCESSES >= 2, tests marked ``one_process`` are skipped with their reason: they read or
    patch objects that live in the one Stratum process (its sessions, guard, job book, block submitter), which
    are in the front-end processes then. What they test is covered with several processes elsewhere or is the
    same code per process."""
    if int(os.environ.get("POOL_TEST_PROCESSES") or 1) < 2:
        return
    for item in items:
        marker = item.get_closest_marker("one_process")
        if marker is not None:
            reason = marker.args[0] if marker.args else "reads objects of the one Stratum process"
            item.add_marker(pytest.mark.skip(reason=f"one Stratum process only: {reason}"))


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
    from tests.support.postgres import cluster_or_skip

    with cluster_or_skip() as cluster:
        yield cluster


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

    def verify(self) -> None:
        """Every PostgreSQL ledger made passes ``pool audit verify`` (the integration tests' check of SQLite
        files, ``ledgers_verify``, for this backend)."""
        from pool.reports import audit_verify

        for url in self._made:
            try:
                ok, message = audit_verify(url)
            except Exception:  # noqa: BLE001 - a database the test never opened as a ledger
                continue
            assert ok, f"{url}: {message}"

    def cleanup(self) -> None:
        for url in self._made:
            self._cluster.drop_database(url)


@pytest.fixture
def ledger_target(ledger_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LedgerTargets]:
    """Where the test's ledgers live, on the backend the test is parametrized with."""
    cluster = request.getfixturevalue("pg_cluster") if ledger_backend == "postgresql" else None
    targets = LedgerTargets(ledger_backend, tmp_path, cluster)
    try:
        yield targets
        if request.node.get_closest_marker("integration") is not None:
            targets.verify()
    finally:
        targets.cleanup()


def start_node(tmp_path: Path, bin_dir: Path, extra_args: tuple[str, ...] = ()) -> RegtestNode:
    node = RegtestNode(tmp_path, bin_dir, extra_args=extra_args)
    node.start()
    node.ensure_wallet("pool")
    return node


@pytest.fixture(scope="module")
def regtest(tmp_path_factory: pytest.TempPathFactory, bitcoind_dir: Path) -> Iterator[RegtestNode]:
    """One regtest node per test module, with a wallet named 'pool'."""
    node = start_node(tmp_path_factory.mktemp("regtest"), bitcoind_dir)
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def fresh_regtest(tmp_path: Path, bitcoind_dir: Path) -> Iterator[RegtestNode]:
    """A node of the test's own, for tests that stop, restart or reorganise it."""
    node = start_node(tmp_path / "node", bitcoind_dir)
    try:
        yield node
    finally:
        node.stop()


def pool_config(node: RegtestNode, data_dir: Path, /, **overrides: dict) -> object:
    """Config for an in-process pool on ``node``: Stratum on a free 127.0.0.1 port, tiny difficulty."""
    from pool.config import parse_config

    address = node.rpc("getnewaddress", wallet="pool")
    raw: dict = {
        "data_dir": str(data_dir),
        "node": {
            "rpc_url": node.rpc_url,
            "rpc_user": node.user,
            "rpc_password": node.password,
            "network": "regtest",
            "zmq_hashblock": node.zmq_endpoint,
            "refresh_interval": 30,
        },
        "stratum": {"host": "127.0.0.1", "port": 0, "pool_tag": "/pool-test/"},
        "difficulty": {"start": 1e-8, "min": 1e-10, "max": 1e6, "target_share_interval": 10},
        "payout": {"scheme": "pplns", "pool_address": address},
        "metrics": {"port": 0},
        "logging": {"level": "warning", "format": "json"},
    }
    # One process unless POOL_TEST_PROCESSES=2 (the in-process pools of the suite as front-end processes +
    # coordinator): many tests read the one process's objects (sessions, job book, its metrics registry).
    raw["stratum"]["processes"] = int(os.environ.get("POOL_TEST_PROCESSES") or 1)
    for section, values in overrides.items():
        if isinstance(values, dict):
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_config(raw, env={})


@contextlib.asynccontextmanager
async def running_pool(node: RegtestNode, data_dir: Path, /, **overrides: Any) -> AsyncIterator[Any]:
    """An in-process pool on ``node`` (``pool_config`` with ``overrides``), stopped on the way out."""
    from pool.app import PoolApp

    app = PoolApp(await asyncio.to_thread(pool_config, node, data_dir, **overrides))
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture
async def pool_app(regtest: RegtestNode, tmp_path: Path) -> AsyncIterator[object]:
    """A running pool on the module's regtest node."""
    async with running_pool(regtest, tmp_path / "pool") as app:
        yield app
