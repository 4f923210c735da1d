"""The ledger on SQLite (WAL), written in group commits by one thread off the event loop.

Acknowledge-after-commit: ``record_share`` returns a future that resolves once the share's transaction is
durable (``synchronous=FULL``), and the server answers the miner only then. Shares from many connections share
one commit, so the cost is one fsync per batch, and a ``kill -9`` can never lose a share the pool said
``true`` to. Batches form by themselves: while one commit's fsync runs, the next shares queue up and go
into the next commit together, so the writer never waits on purpose (``max_wait`` 0) and a lone share is
committed at once. All accounting goes through ``book.py``; this module is only the transport.

Share rows past every window are rolled up (``rollup.py``) by a maintenance thread of the ledger's own, on its
own connection, in short batches between the writer's commits, never inside one.

The same class runs the ledger on PostgreSQL when given a ``postgresql://`` URL instead of a path (``pg.py``):
the same writer thread and group commits (a share is acknowledged once PostgreSQL has committed it), the same
SQL. One difference is deliberate: a lost PostgreSQL connection (server restart, network) does not stop the
writer for good. The batch in hand fails (its shares are answered with an error, never ``true``), and the next
batch reconnects, so the pool recovers by itself once the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from pool.ledger import best, book, dialect, pg, rollup, schema, window
from pool.ledger.book import AuditEntry
from pool.ledger.commit import Commit

log = structlog.get_logger("pool.ledger")

Op = Callable[[Any], Any]  # called with a sqlite3.Connection or a pg.PgConnection
Entry = tuple[Op, "Commit | None", "asyncio.AbstractEventLoop | None"]  # a write, its answer, its loop
RECONNECT_INTERVAL = 0.5  # PostgreSQL down: seconds between the writer's connection attempts
IDLE_READERS = 4
PG_MAX_BATCH = 250  # PostgreSQL: connections kept open for reads and run_sync (SQLite opens one per call)


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

    def __reduce__(self) -> tuple[type[ShareRecord], tuple[Any, ...]]:
        """Pickled as its fields: every accepted share crosses from a front-end process to the coordinator,
        and the default for a slotted dataclass (a Python-level ``__getstate__``/``__setstate__``) cost
        ~1.7 µs to dump and ~2.2 µs to load per share, against ~0.5 and ~1 this way."""
        return ShareRecord, (self.ts, self.address, self.worker, self.difficulty, self.share_difficulty, self.job_id,
                             self.height, self.block_hash, self.is_block, self.network_difficulty, self.subsidy,
                             self.expected_fees)


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
    fee: int | None = None  # SOLO: the fee output the coinbase really carries (None: the policy's share)


class LedgerFailed(Exception):
    """The ledger's writer thread is gone: nothing can be recorded until the pool restarts."""


class DuplicateShare(Exception):
    """The share was credited already (a front-end process judges duplicates only among its own miners; the
    coordinator, which sees every share, refuses the same solution arriving through another process)."""


class LedgerUnavailable(Exception):
    """The database cannot be reached right now (PostgreSQL down): this write failed, later ones may not."""


class _StaleConnection(Exception):
    """A PostgreSQL connection was found dead before anything ran on it."""


class Ledger:
    """The ledger (SQLite file or PostgreSQL database) with a single writer thread doing group commits."""

    def __init__(self, path: Path | str | pg.PgTarget, policy: book.Policy | None = None, max_batch: int = 2000,
                 max_wait: float = 0.0, rollup_interval: float = 600.0,
                 keep_seconds: float = rollup.KEEP_SECONDS, password: str | None = None) -> None:
        if isinstance(path, pg.PgTarget):
            path, password = path.url, path.password
        self.url = str(path) if pg.is_url(path) else None
        self.password = password
        if self.url is None:
            self.path: Path | None = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.where = str(self.path)
            self.dialect = dialect.SQLITE
            self.errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        else:
            if pg.has_password(self.url):
                raise ValueError(f"ledger URL {pg.redact(self.url)} holds a password: give it in"
                                 f" {pg.PASSWORD_ENV} or ledger.password_file instead")
            self.path = None
            self.where = self.url
            self.dialect = dialect.POSTGRES
            self.errors = (pg.Error,)
        self._idle: list[Any] = []  # PostgreSQL reader connections kept for reuse
        # PostgreSQL: since when (monotonic) the writer has had no connection; None while it has one.
        self.unavailable_since: float | None = None
        self.policy = policy or book.Policy()
        # Writes go to the writer thread in lists: every write submitted during one event-loop iteration is
        # handed over at once (one queue put, one wake-up of the writer), and answered by one callback per
        # loop per commit (``_resolve_all``), not a lock, a condition and a cross-thread wake-up per share.
        self._queue: queue.Queue[list[Entry] | None] = queue.Queue()
        self._pending: list[Entry] = []
        self._pending_lock = threading.Lock()
        self._pending_on: asyncio.AbstractEventLoop | None = None  # the loop a hand-over is scheduled on
        # PostgreSQL: a batch's cost per share grows past a few hundred shares (its one prefetch query and
        # pipeline grow with it), while a few hundred already spread the commit's round trips thin.
        self._max_batch = max_batch if self.url is None else min(max_batch, PG_MAX_BATCH)
        self._max_wait = max_wait
        conn = self._connect()
        try:
            self.schema_version = schema.prepare(conn, self.where)  # book.SCHEMA and best.SCHEMA, versioned
        finally:
            conn.close()
        self._stopped = False
        self._state = threading.Lock()  # orders submit() against the writer's death (no share slips past it)
        self.failure: BaseException | None = None  # set when the writer thread died; every write then fails
        self.on_commit: Callable[[int, float], None] | None = None
        # The network difficulty of the newest share recorded: the current PPLNS window for the roll-up.
        self.network_difficulty = 0.0
        self.keep_seconds = keep_seconds
        self._rollup_interval = rollup_interval
        self._stop_rollup = threading.Event()
        self.on_failure: Callable[[BaseException], None] | None = None
        self._thread = threading.Thread(target=self._writer, name="ledger-writer", daemon=True)
        self._thread.start()
        self._rollup_thread: threading.Thread | None = None
        if rollup_interval > 0:
            self._rollup_thread = threading.Thread(target=self._rollup_loop, name="ledger-rollup", daemon=True)
            self._rollup_thread.start()

    @property
    def is_pg(self) -> bool:
        return self.url is not None

    @property
    def target(self) -> pg.LedgerSource:
        """What ``reports`` and the CLI open to read this ledger."""
        return pg.PgTarget(self.url, self.password) if self.url is not None else self.where

    def connect(self) -> Any:
        """A new connection of this ledger's own (tests, tools); the caller closes it."""
        return self._connect()

    def _connect(self) -> Any:
        if self.url is not None:
            return pg.connect(self.url, self.password, application_name="pool-ledger")
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    # ---- writes (each resolves after its commit) -----------------------------------------------------------

    def record_share(self, s: ShareRecord) -> Commit:
        policy = self.policy
        if s.network_difficulty > 0:
            self.network_difficulty = s.network_difficulty
        def op(c: Any) -> int:
            return book.insert_share(c, policy, s, s.network_difficulty, s.subsidy, s.expected_fees)

        op.shares = (s,)  # type: ignore[attr-defined]  # written with its neighbours (_run_sqlite, window.prefetch)
        op.policy = policy  # type: ignore[attr-defined]
        op.single = True  # type: ignore[attr-defined]  # answered by its share id
        return self.submit(op)

    def record_shares(self, shares: list[ShareRecord]) -> Commit:
        """Several shares as one operation of the next commit: one savepoint and one answer for all of them
        (a front-end process's batch); if one cannot be written, none is, and each is answered as failed."""
        policy = self.policy
        for s in shares:
            if s.network_difficulty > 0:
                self.network_difficulty = s.network_difficulty

        def insert_all(c: Any) -> None:
            for s in shares:
                book.insert_share(c, policy, s, s.network_difficulty, s.subsidy, s.expected_fees)

        insert_all.shares = shares  # type: ignore[attr-defined]
        insert_all.policy = policy  # type: ignore[attr-defined]
        insert_all.single = False  # type: ignore[attr-defined]
        return self.submit(insert_all)

    def record_block(self, b: BlockRecord) -> Commit:
        policy = self.policy
        return self.submit(lambda c: book.insert_block(c, policy, b))

    def record_best(self, row: best.Row) -> Commit:
        """A worker's raised best-share record, in the same group commit as the share that set it (queued
        right behind it)."""
        return self.record_bests([row])

    def record_bests(self, rows: list[best.Row]) -> Commit:
        """Several workers' raised records as one write: right after a start every worker's first shares raise
        its record, one write each would be thousands of statements in the writer's first batches."""
        return self.submit(lambda c: best.upsert(c, rows))

    def set_block_status(self, block_hash: str, status: str, confirmations: int = 0) -> Commit:
        return self.submit(lambda c: book.set_block_status(c, block_hash, status, confirmations))

    def submit(self, op: Op) -> Commit:
        """Run ``op`` in the writer's next transaction; the future gets its result after the commit."""
        loop = asyncio.get_running_loop()
        # Answered on the loop's thread, callbacks run at once: no loop turn per share between the commit
        # and the miner's reply (pool/ledger/commit.py).
        future = Commit()
        refusal = self._refusal()
        if refusal is not None:
            future.set_exception(refusal)
        else:
            with self._pending_lock:
                self._pending.append((op, future, loop))
                schedule = self._pending_on is not loop
                self._pending_on = loop
            if schedule:
                loop.call_soon(self._hand_over)
        return future

    def _hand_over(self) -> None:
        """Queue what was submitted since the last hand-over, in order, as one entry for the writer."""
        with self._pending_lock:
            entries, self._pending = self._pending, []
            self._pending_on = None
        if not entries:
            return
        with self._state:  # ordered against the writer's death: nothing is queued after it drained the queue
            refusal = self._refusal()
            if refusal is None:
                self._queue.put(entries)
                return
        _answer_all(entries, [(None, refusal)] * len(entries))

    def _refusal(self) -> BaseException | None:
        """Why no write can be taken now (the writer died, or the ledger is closed); None while it can."""
        if self.failure is not None:
            return LedgerFailed(f"ledger writer stopped: {self.failure!r}")
        if self._stopped:
            return RuntimeError("ledger is closed")
        return None

    def run_sync(self, op: Op) -> Any:
        """Run ``op`` in its own immediate transaction from a non-loop thread (CLI, payments, tests)."""
        for attempt in (1, 2):
            try:
                return self._run_sync_once(op)
            except _StaleConnection:
                if attempt == 2:
                    raise LedgerUnavailable(f"ledger database {self.where} unreachable") from None
        raise AssertionError("unreachable")

    def _run_sync_once(self, op: Op) -> Any:
        with self._reading() as conn:
            self._begin(conn)
            try:
                result = op(conn)
            except BaseException:
                with contextlib.suppress(*self.errors):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def _begin(self, conn: Any) -> None:
        """BEGIN IMMEDIATE; a kept PostgreSQL connection found dead here (the server restarted while it was
        idle) is ``_StaleConnection``: nothing ran yet, so the caller may simply try again on a new one."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except pg.Error as exc:
            if self.url is not None and pg.connection_lost(exc):
                raise _StaleConnection() from exc
            raise

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        """A connection for one read or ``run_sync``: new each time on SQLite (cheap), reused on PostgreSQL."""
        if self.url is None:
            conn = self._connect()
            try:
                yield conn
            finally:
                conn.close()
            return
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect()
        healthy = False
        try:
            yield conn
            healthy = True
        finally:
            if healthy and not conn.broken and not conn.in_transaction and not self._stopped \
                    and len(self._idle) < IDLE_READERS:
                self._idle.append(conn)
            else:
                conn.close()

    def _writer(self) -> None:
        in_hand: list[Entry] = []  # entries taken off the queue and not answered yet
        carry: list[Entry] = []  # taken beyond the batch limit: the next batch starts with them
        try:
            conn = self._connect() if self.url is None else self._reconnect(first=True)
            next_connect = 0.0
            while True:
                if carry:
                    batch, carry = carry, []
                else:
                    first = self._queue.get()
                    if first is None:
                        break
                    batch = list(first)
                in_hand = batch
                deadline = time.monotonic() + self._max_wait
                while len(batch) < self._max_batch:
                    remaining = deadline - time.monotonic()
                    try:
                        entries = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if entries is None:
                        self._queue.put(None)
                        break
                    batch.extend(entries)
                if len(batch) > self._max_batch:
                    carry = batch[self._max_batch:]
                    del batch[self._max_batch:]
                    in_hand = batch + carry
                start = time.monotonic()
                if conn is None and time.monotonic() >= next_connect:  # PostgreSQL: the connection was lost
                    conn = self._reconnect()
                    if conn is None:  # down: refuse at once for a moment instead of a connect per batch
                        next_connect = time.monotonic() + RECONNECT_INTERVAL
                if conn is None:
                    results: list[tuple[Any, BaseException | None]] = [
                        (None, LedgerUnavailable(f"ledger database {self.where} unreachable")) for _ in batch]
                else:
                    try:
                        results = self._commit(conn, batch)
                    except _StaleConnection:  # lost while idle: nothing of the batch ran; once more, anew
                        conn.close()
                        conn = self._reconnect()
                        results = (self._commit_or_fail(conn, batch) if conn is not None else
                                   [(None, LedgerUnavailable(f"ledger database {self.where} unreachable"))
                                    for _ in batch])
                    if conn is not None and self.url is not None and conn.broken:
                        log.error("ledger_connection_lost", database=self.where, failed_writes=len(batch))
                        conn.close()
                        conn = None
                        self.unavailable_since = self.unavailable_since or time.monotonic()
                try:
                    if self.on_commit is not None:
                        self.on_commit(len(batch), time.monotonic() - start)
                except Exception as hook_error:  # a metrics hook must not stop the ledger
                    log.error("ledger_commit_hook_failed", error=str(hook_error))
                finally:  # committed or not is known now: answered truly even if the hook fails
                    _answer_all(batch, results)
                    in_hand = list(carry)
            if conn is not None:
                conn.close()
        except BaseException as exc:  # the thread is dying: nobody may wait on it forever
            self._die(exc, in_hand)

    def _reconnect(self, first: bool = False) -> Any:
        try:
            conn = self._connect()
        except pg.Error:
            self.unavailable_since = self.unavailable_since or time.monotonic()
            return None
        self.unavailable_since = None
        if not first:
            log.warning("ledger_connection_restored", database=self.where)
        return conn

    def _die(self, exc: BaseException, in_hand: list[Any]) -> None:
        """Fail every write in hand, queued or still to come, so each share is answered (error 20, not true)."""
        log.critical("ledger_writer_died", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        failed = LedgerFailed(f"ledger writer stopped: {exc!r}")
        with self._state:
            self.failure = exc
            entries = list(in_hand)
            while True:
                try:
                    queued = self._queue.get_nowait()
                except queue.Empty:
                    break
                if queued is not None:
                    entries.extend(queued)
        if self.on_failure is not None:  # first: by the time a miner hears "error", the pool is marked
            try:
                self.on_failure(exc)
            except Exception as hook_error:  # the hook must not hide the original failure
                log.error("ledger_failure_hook_failed", error=str(hook_error))
        _answer_all(entries, [(None, failed)] * len(entries))

    def _commit(self, conn: Any, batch: list[Any]) -> list[tuple[Any, BaseException | None]]:
        """One transaction for the batch; an op that fails is undone alone. If the database itself fails (or
        the connection is lost, even at COMMIT), every op of the batch fails.

        Both run the ops without savepoints first (on SQLite a savepoint and its release are two of the four
        statements an accepted share costs the writer). PostgreSQL: every round trip counts, so the shares'
        totals and ids are read once for the batch (``window.prefetch``) and the ops run in pipeline mode (a
        share's insert waits for no answer). If anything fails, the transaction is rolled back and the batch
        runs again one op at a time with savepoints, where the failing op fails alone (ops only touch the
        database: the rolled-back run left nothing behind)."""
        if self.url is None:
            try:
                conn.execute("BEGIN IMMEDIATE")
                results = self._run_sqlite(conn, batch)
                conn.execute("COMMIT")
                return results
            except Exception:  # noqa: BLE001 - the careful run below gives each op its own outcome
                with contextlib.suppress(*self.errors):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                return self._commit_each(conn, batch, {})
        self._begin(conn)
        try:
            keys = [(s.address, s.worker) for op, _, _ in batch for s in getattr(op, "shares", ())]
            if len(keys) > 1:  # one round trip for every share's previous totals and id, not one per share
                conn.totals = window.prefetch(conn, keys)
            results: list[tuple[Any, BaseException | None]] = []
            with conn.pipelined():
                for op, _, _ in batch:
                    results.append((op(conn), None))
            conn.execute("COMMIT")
            return results
        except Exception as exc:
            if pg.connection_lost(exc) or conn.broken:
                return self._failed(conn, batch, exc)
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except self.errors as lost:
                return self._failed(conn, batch, lost)
            return self._commit_each(conn, batch, {})

    @staticmethod
    def _run_sqlite(conn: Any, batch: list[Any]) -> list[tuple[Any, BaseException | None]]:
        """The batch's ops in order, each run of consecutive share ops (same policy) written together by
        ``book.insert_share_run``; any other op (a block, a best share, history) runs alone, between runs."""
        results: list[tuple[Any, BaseException | None]] = []
        i, n = 0, len(batch)
        while i < n:
            op = batch[i][0]
            policy = getattr(op, "policy", None)
            j = i
            while j < n and getattr(batch[j][0], "shares", None) is not None and batch[j][0].policy is policy:
                j += 1
            if j == i:
                results.append((op(conn), None))
                i += 1
                continue
            run = [entry[0] for entry in batch[i:j]]
            ids = book.insert_share_run(conn, policy, [s for r in run for s in r.shares])
            if ids is None:  # the newest rows lack totals: one by one (the first fills them in)
                results.extend((r(conn), None) for r in run)
            else:
                k = 0
                for r in run:
                    results.append((ids[k] if r.single else None, None))
                    k += len(r.shares)
            i = j
        return results

    def _commit_or_fail(self, conn: Any, batch: list[Any]) -> list[tuple[Any, BaseException | None]]:
        try:
            return self._commit(conn, batch)
        except _StaleConnection as exc:
            return [(None, LedgerUnavailable(f"ledger database {self.where} unreachable: {exc.__cause__}"))
                    for _ in batch]

    def _commit_each(self, conn: Any, batch: list[Any], skip: dict[int, BaseException]
                     ) -> list[tuple[Any, BaseException | None]]:
        results: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for i, (op, _, _) in enumerate(batch):
                if i in skip:
                    results.append((None, skip[i]))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    results.append((op(conn), None))
                    conn.execute("RELEASE op")
                except Exception as exc:  # handed to that op's caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((None, exc))
            conn.execute("COMMIT")
        except self.errors as exc:
            return self._failed(conn, batch, exc)
        return results

    def _failed(self, conn: Any, batch: list[Any], exc: BaseException) -> list[tuple[Any, BaseException | None]]:
        with contextlib.suppress(*self.errors):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return [(None, exc) for _ in batch]

    # ---- roll-up of old share rows ------------------------------------------------------------------------

    def rollup(self, network_difficulty: float | None = None, batch: int = rollup.BATCH,
               max_batches: int | None = None, now: float | None = None,
               stop: Callable[[], bool] | None = None) -> int:
        """Roll up and delete the share rows no window needs any more, ``batch`` rows per short transaction on
        a connection of its own (call from a thread, not the event loop). Returns the rows removed."""
        nd = self.network_difficulty if network_difficulty is None else network_difficulty
        with self._reading() as conn:
            return rollup.prune(conn, self.policy.scheme, self.policy.pplns_factor, nd, self.keep_seconds, batch,
                                max_batches, now, stop=stop)

    def _rollup_loop(self) -> None:
        while not self._stop_rollup.wait(self._rollup_interval):
            try:
                removed = self.rollup(stop=self._stop_rollup.is_set)  # closing: stop between batches
            except Exception as exc:  # retried next interval; the rows stay until then
                log.error("share_rollup_failed", error=str(exc))
                continue
            if removed:
                log.info("shares_rolled_up", rows=removed)

    # ---- reads (small, synchronous; CLI, API and tests) ------------------------------------------------------

    def share_totals(self, address: str | None = None) -> list[tuple[Any, ...]]:
        """Shares and difficulty per worker over rolled-up totals and remaining rows (reports, API)."""
        return self.read(lambda conn: rollup.share_totals(conn, address))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.read(lambda conn: conn.execute(sql, params).fetchall())

    def best_shares(self) -> tuple[list[best.Row], int]:
        """Every worker's best-share records and the current round number (at start)."""
        return self.read(best.load)

    def best_for_address(self, address: str) -> list[dict[str, Any]]:
        return self.read(lambda conn: best.for_address(conn, address))

    def audit_entries(self) -> list[AuditEntry]:
        return self.read(book.read_audit)

    def read(self, op: Op) -> Any:
        """Run a read-only ``op``; on PostgreSQL once more on a fresh connection if a kept one was lost."""
        for attempt in (1, 2):
            try:
                with self._reading() as conn:
                    return op(conn)
            except pg.Error as exc:
                if attempt == 2 or not pg.connection_lost(exc):
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if not self._stopped:
            self._hand_over()  # writes submitted in this loop iteration are still written
            self._stopped = True
            self._stop_rollup.set()
            if self._rollup_thread is not None:
                self._rollup_thread.join(timeout=30)
            self._queue.put(None)
            self._thread.join(timeout=30)
            while self._idle:
                self._idle.pop().close()


def _answer_all(entries: list[Entry], results: list[tuple[Any, BaseException | None]]) -> None:
    """Hand each entry's outcome to its future: one thread-safe callback per event loop (usually one)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Commit, Any, BaseException | None]]] = {}
    for (_, future, loop), (value, error) in zip(entries, results, strict=True):
        if future is not None and loop is not None:
            by_loop.setdefault(loop, []).append((future, value, error))
    for loop, answers in by_loop.items():
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody is left to answer
                loop.call_soon_threadsafe(_resolve_all, answers)


def _resolve_all(answers: list[tuple[Commit, Any, BaseException | None]]) -> None:
    for future, value, error in answers:
        _resolve(future, value, error)


def _resolve(future: Commit, value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
