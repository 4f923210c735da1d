"""The share and block ledger on SQLite (WAL), written in group commits off the event loop.

Acknowledge-after-commit: ``record_share`` returns a future that resolves once the share's transaction is
durable, and the server answers the miner only then. Many connections' shares share one commit, so the cost is
one fsync per batch rather than per share, and a ``kill -9`` can never lose a share the pool said ``true`` to.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    difficulty REAL NOT NULL,
    share_difficulty REAL NOT NULL,
    job_id TEXT NOT NULL,
    height INTEGER NOT NULL,
    block_hash TEXT NOT NULL,
    is_block INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS shares_address ON shares(address, worker);
CREATE TABLE IF NOT EXISTS blocks (
    block_hash TEXT PRIMARY KEY,
    height INTEGER NOT NULL,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    reward INTEGER NOT NULL,
    status TEXT NOT NULL,
    found_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_share_id INTEGER
);
"""


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


@dataclass(frozen=True, slots=True)
class BlockRecord:
    block_hash: str
    height: int
    address: str
    worker: str
    reward: int
    status: str
    found_at: float


class Ledger:
    """SQLite ledger with a single writer thread doing group commits."""

    def __init__(self, path: Path, max_batch: int = 2000, max_wait: float = 0.005) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._queue: queue.Queue[tuple[str, Any, asyncio.Future[Any] | None, asyncio.AbstractEventLoop | None]] = (
            queue.Queue()
        )
        self._max_batch = max_batch
        self._max_wait = max_wait
        conn = self._connect()
        conn.executescript(SCHEMA)
        conn.close()
        self._thread = threading.Thread(target=self._writer, name="ledger-writer", daemon=True)
        self._stopped = False
        self.last_batch_size = 0
        self.last_commit_seconds = 0.0
        self.on_commit: Any = None
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # ---- writes ------------------------------------------------------------------------------------------

    def record_share(self, share: ShareRecord) -> asyncio.Future[Any]:
        """Queue a share; the future resolves (to its row id) when it is committed."""
        return self._submit("share", share)

    def record_block(self, block: BlockRecord) -> asyncio.Future[Any]:
        return self._submit("block", block)

    def set_block_status(self, block_hash: str, status: str) -> asyncio.Future[Any]:
        return self._submit("block_status", (block_hash, status))

    def _submit(self, kind: str, item: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._stopped:
            future.set_exception(RuntimeError("ledger is closed"))
            return future
        self._queue.put((kind, item, future, loop))
        return future

    def _writer(self) -> None:
        conn = self._connect()
        while True:
            first = self._queue.get()
            if first[0] == "stop":
                break
            batch = [first]
            deadline = time.monotonic() + self._max_wait
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    entry = self._queue.get(timeout=max(remaining, 0)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if entry[0] == "stop":
                    self._queue.put(entry)
                    break
                batch.append(entry)
            start = time.monotonic()
            results: list[tuple[Any, BaseException | None]] = []
            try:
                conn.execute("BEGIN IMMEDIATE")
                for kind, item, _, _ in batch:
                    results.append((self._apply(conn, kind, item), None))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK") if conn.in_transaction else None
                results = [(None, exc) for _ in batch]
            self.last_batch_size = len(batch)
            self.last_commit_seconds = time.monotonic() - start
            if self.on_commit is not None:
                self.on_commit(len(batch), self.last_commit_seconds)
            for (_, _, future, loop), (value, error) in zip(batch, results, strict=True):
                if future is not None and loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(_resolve, future, value, error)
        conn.close()

    @staticmethod
    def _apply(conn: sqlite3.Connection, kind: str, item: Any) -> Any:
        if kind == "share":
            s: ShareRecord = item
            cur = conn.execute(
                "INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height, block_hash,"
                " is_block) VALUES (?,?,?,?,?,?,?,?,?)",
                (s.ts, s.address, s.worker, s.difficulty, s.share_difficulty, s.job_id, s.height, s.block_hash,
                 int(s.is_block)),
            )
            return cur.lastrowid
        if kind == "block":
            b: BlockRecord = item
            conn.execute(
                "INSERT OR IGNORE INTO blocks (block_hash, height, address, worker, reward, status, found_at,"
                " updated_at, last_share_id) VALUES (?,?,?,?,?,?,?,?,(SELECT MAX(id) FROM shares))",
                (b.block_hash, b.height, b.address, b.worker, b.reward, b.status, b.found_at, time.time()),
            )
            return b.block_hash
        if kind == "block_status":
            block_hash, status = item
            conn.execute("UPDATE blocks SET status=?, updated_at=? WHERE block_hash=?", (status, time.time(), block_hash))
            return status
        raise ValueError(f"unknown ledger write {kind!r}")

    # ---- reads (small, synchronous; used by CLI and tests) --------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def close(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(("stop", None, None, None))
            self._thread.join(timeout=30)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
