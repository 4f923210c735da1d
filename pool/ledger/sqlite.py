"""The ledger on SQLite (WAL), written in group commits by one thread off the event loop.

Acknowledge-after-commit: ``record_share`` returns a future that resolves once the share's transaction is
durable (``synchronous=FULL``), and the server answers the miner only then. Shares from many connections share
one commit, so the cost is one fsync per batch, and a ``kill -9`` can never lose a share the pool said
``true`` to. Batches form by themselves: while one commit's fsync runs, the next shares queue up and go
into the next commit together, so the writer never waits on purpose (``max_wait`` 0) and a lone share is
committed at once. All accounting goes through ``book.py``; this module is only the transport.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from pool.ledger import book
from pool.ledger.book import AuditEntry

log = structlog.get_logger("pool.ledger")

Op = Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True, slots=True)
class ShareRecord:
    ts: float
    address: str
    worker: str
    difficulty: float
    share_difficulty: float
    job_id: str
    height: int
    block_hash: str
    is_block: bool
    network_difficulty: float = 0.0
    subsidy: int = 0
    expected_fees: int = 0


@dataclass(frozen=True, slots=True)
class BlockRecord:
    block_hash: str
    height: int
    address: str
    worker: str
    reward: int
    subsidy: int
    network_difficulty: float
    found_at: float


class LedgerFailed(Exception):
    """The ledger's writer thread is gone: nothing can be recorded until the pool restarts."""


class Ledger:
    """SQLite ledger with a single writer thread doing group commits."""

    def __init__(self, path: Path, policy: book.Policy | None = None, max_batch: int = 2000,
                 max_wait: float = 0.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.policy = policy or book.Policy()
        self._queue: queue.Queue[tuple[Op | None, asyncio.Future[Any] | None, asyncio.AbstractEventLoop | None]] = (
            queue.Queue()
        )
        self._max_batch = max_batch
        self._max_wait = max_wait
        conn = self._connect()
        conn.executescript(book.SCHEMA)
        conn.close()
        self._stopped = False
        self._state = threading.Lock()  # orders submit() against the writer's death (no share slips past it)
        self.failure: BaseException | None = None  # set when the writer thread died; every write then fails
        self.on_commit: Callable[[int, float], None] | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self._thread = threading.Thread(target=self._writer, name="ledger-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # ---- writes (each resolves after its commit) -----------------------------------------------------------

    def record_share(self, s: ShareRecord) -> asyncio.Future[Any]:
        policy = self.policy
        return self.submit(lambda c: book.insert_share(c, policy, s, s.network_difficulty, s.subsidy,
                                                       s.expected_fees))

    def record_block(self, b: BlockRecord) -> asyncio.Future[Any]:
        policy = self.policy
        return self.submit(lambda c: book.insert_block(c, policy, b))

    def set_block_status(self, block_hash: str, status: str, confirmations: int = 0) -> asyncio.Future[Any]:
        return self.submit(lambda c: book.set_block_status(c, block_hash, status, confirmations))

    def submit(self, op: Op) -> asyncio.Future[Any]:
        """Run ``op`` in the writer's next transaction; the future gets its result after the commit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._state:
            if self.failure is not None:
                future.set_exception(LedgerFailed(f"ledger writer stopped: {self.failure!r}"))
            elif self._stopped:
                future.set_exception(RuntimeError("ledger is closed"))
            else:
                self._queue.put((op, future, loop))
        return future

    def run_sync(self, op: Op) -> Any:
        """Run ``op`` in its own immediate transaction from a non-loop thread (CLI, payments, tests)."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = op(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    def _writer(self) -> None:
        in_hand: list[Any] = []  # entries taken off the queue and not answered yet
        try:
            conn = self._connect()
            while True:
                first = self._queue.get()
                if first[0] is None:
                    break
                in_hand = batch = [first]
                deadline = time.monotonic() + self._max_wait
                while len(batch) < self._max_batch:
                    remaining = deadline - time.monotonic()
                    try:
                        entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if entry[0] is None:
                        self._queue.put(entry)
                        break
                    batch.append(entry)
                start = time.monotonic()
                results = self._commit(conn, batch)
                try:
                    if self.on_commit is not None:
                        self.on_commit(len(batch), time.monotonic() - start)
                finally:  # committed or not is known now: answered truly even if the hook fails
                    for (_, future, loop), (value, error) in zip(batch, results, strict=True):
                        if future is not None and loop is not None and not loop.is_closed():
                            loop.call_soon_threadsafe(_resolve, future, value, error)
                    in_hand = []
            conn.close()
        except BaseException as exc:  # the thread is dying: nobody may wait on it forever
            self._die(exc, in_hand)

    def _die(self, exc: BaseException, in_hand: list[Any]) -> None:
        """Fail every write in hand, queued or still to come, so each share is answered (error 20, not true)."""
        log.critical("ledger_writer_died", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        failed = LedgerFailed(f"ledger writer stopped: {exc!r}")
        with self._state:
            self.failure = exc
            entries = list(in_hand)
            while True:
                try:
                    entries.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        if self.on_failure is not None:  # first: by the time a miner hears "error", the pool is marked
            try:
                self.on_failure(exc)
            except Exception as hook_error:  # the hook must not hide the original failure
                log.error("ledger_failure_hook_failed", error=str(hook_error))
        for _, future, loop in entries:
            if future is not None and loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future, None, failed)

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, BaseException | None]]:
        """One transaction for the batch; an op that fails is rolled back to its savepoint alone."""
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, _, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((op(conn), None))
                    conn.execute("RELEASE op")
                except Exception as exc:  # handed to that op's caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((None, exc))
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            results = [(None, exc) for _ in batch]
        return results

    # ---- reads (small, synchronous; CLI, API and tests) ------------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def audit_entries(self) -> list[AuditEntry]:
        conn = self._connect()
        try:
            return book.read_audit(conn)
        finally:
            conn.close()

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put((None, None, None))
            self._thread.join(timeout=30)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
