"""Accepted work over time: minutely and hourly roll-ups per address and worker (and the pool total), for charts.

Why in the ledger: the live statistics (``mining/stats.py``) cover ten minutes and vanish at a restart, while a
dashboard shows a day, a month, a quarter. Why not a query per share: the share path is the pool's hot path.
Accepted work is summed in memory (``WorkHistory.add``: one dict update per share) and written by the ledger's
own writer, one upsert per (minute, address, worker) key and flush, in the same group commits as the shares
(``HistoryWriter``). Rows are pruned by age: minutely rows after ``minutely_keep`` seconds, hourly rows after
``hourly_keep``.

The SQL is plain and portable (CREATE TABLE with INTEGER/REAL/TEXT, ``INSERT ... ON CONFLICT ... DO UPDATE``
with the target table named in the update) so the same statements run on PostgreSQL. The pool total is kept in
rows of its own (address and worker ``''``, which no miner can authorize as), so the pool chart reads one row
per bucket however many workers there are.

This is chart data, not accounting: the payout maths never reads it, and a flush the ledger refuses is logged
and dropped rather than retried without bound.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

log = structlog.get_logger("pool.history")

HASHES_PER_DIFF1 = 2**32
MINUTE = 60
HOUR = 3600
POOL = ""  # address and worker of the pool-total rows
TABLES = {MINUTE: "work_minutely", HOUR: "work_hourly"}
MAX_POINTS = 400
# Chart steps, smallest first: the first one giving at most MAX_POINTS points over the span is used.
STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
MAX_SPAN = 366 * 86400
CHUNK = 1000  # keys per writer op: a big flush is spread over several short ops

SCHEMA = """
CREATE TABLE IF NOT EXISTS work_minutely (
    bucket INTEGER NOT NULL,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    shares INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    PRIMARY KEY (address, worker, bucket)
);
CREATE INDEX IF NOT EXISTS work_minutely_bucket ON work_minutely(bucket);
CREATE TABLE IF NOT EXISTS work_hourly (
    bucket INTEGER NOT NULL,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    shares INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    PRIMARY KEY (address, worker, bucket)
);
CREATE INDEX IF NOT EXISTS work_hourly_bucket ON work_hourly(bucket);
"""


@dataclass(frozen=True, slots=True)
class WorkRow:
    """Accepted work of one worker (or the pool: address ``''``) in the minute starting at ``bucket``."""

    bucket: int
    address: str
    worker: str
    shares: int
    difficulty: float


class WorkHistory:
    """Accepted work per (minute, address, worker) since the last ``take``; lives on the event loop."""

    def __init__(self) -> None:
        self._pending: dict[tuple[int, str, str], list[float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, address: str, worker: str, difficulty: float, ts: float) -> None:
        key = (int(ts // MINUTE) * MINUTE, address, worker)
        entry = self._pending.get(key)
        if entry is None:
            self._pending[key] = [1, difficulty]
        else:
            entry[0] += 1
            entry[1] += difficulty

    def take(self) -> list[WorkRow]:
        """The work since the last call, per worker and minute plus the pool's total per minute."""
        pending, self._pending = self._pending, {}
        rows = [WorkRow(b, a, w, int(n), d) for (b, a, w), (n, d) in pending.items()]
        return rows + _pool_rows(rows)

    def snapshot(self, address: str | None = None, worker: str | None = None) -> list[tuple[int, int, float]]:
        """Not yet written work as (bucket, shares, difficulty): the pool's, an address's or one worker's."""
        out: dict[int, list[float]] = {}
        for (b, a, w), (n, d) in self._pending.items():
            if (address is None or a == address) and (worker is None or w == worker):
                acc = out.setdefault(b, [0, 0.0])
                acc[0] += n
                acc[1] += d
        return [(b, int(n), d) for b, (n, d) in out.items()]


def _pool_rows(rows: Iterable[WorkRow]) -> list[WorkRow]:
    totals: dict[int, list[float]] = {}
    for r in rows:
        acc = totals.setdefault(r.bucket, [0, 0.0])
        acc[0] += r.shares
        acc[1] += r.difficulty
    return [WorkRow(b, POOL, POOL, int(n), d) for b, (n, d) in totals.items()]


def hourly(rows: Iterable[WorkRow]) -> list[WorkRow]:
    """The same work summed per hour."""
    acc: dict[tuple[int, str, str], list[float]] = {}
    for r in rows:
        e = acc.setdefault((r.bucket // HOUR * HOUR, r.address, r.worker), [0, 0.0])
        e[0] += r.shares
        e[1] += r.difficulty
    return [WorkRow(b, a, w, int(n), d) for (b, a, w), (n, d) in acc.items()]


def _upsert_sql(table: str) -> str:
    return (f"INSERT INTO {table} (bucket, address, worker, shares, difficulty) VALUES (?,?,?,?,?)"
            f" ON CONFLICT (address, worker, bucket) DO UPDATE SET shares = {table}.shares + excluded.shares,"
            f" difficulty = {table}.difficulty + excluded.difficulty")


def write(conn: Any, rows: Sequence[WorkRow]) -> int:
    """Add ``rows`` (minutely) to the minutely and hourly tables; in the caller's transaction."""
    for table, batch in ((TABLES[MINUTE], rows), (TABLES[HOUR], hourly(rows))):
        conn.executemany(_upsert_sql(table), [(r.bucket, r.address, r.worker, r.shares, r.difficulty)
                                              for r in batch])
    return len(rows)


def prune(conn: Any, now: float, minutely_keep: float, hourly_keep: float) -> int:
    """Delete rows older than their table keeps them; in the caller's transaction. Returns rows deleted."""
    removed = 0
    for table, keep in ((TABLES[MINUTE], minutely_keep), (TABLES[HOUR], hourly_keep)):
        cur = conn.execute(f"DELETE FROM {table} WHERE bucket < ?", (int(now - keep),))
        removed += max(0, cur.rowcount or 0)
    return removed


# ---- reading ----------------------------------------------------------------------------------------------

_SPAN = re.compile(r"\A([1-9][0-9]{0,4})([mhd])\Z")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> int:
    """``90m``, ``24h``, ``7d`` -> seconds (1 hour to a year); ValueError with a message otherwise."""
    match = _SPAN.match(text.strip().lower())
    if not match:
        raise ValueError(f"span must look like 1h, 24h, 7d or 90d, got {text[:20]!r}")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if not HOUR <= seconds <= MAX_SPAN:
        raise ValueError("span must be between 1h and 366d")
    return seconds


def plan(span: int, minutely_keep: float) -> tuple[int, int]:
    """(table resolution, step) for a chart over ``span`` seconds: minutely rows while they are kept."""
    resolution = MINUTE if span <= minutely_keep else HOUR
    for step in STEPS:
        if step >= resolution and span / step <= MAX_POINTS:
            return resolution, step
    return resolution, STEPS[-1]


Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def read(query: Query, resolution: int, since: int, address: str | None = None,
         worker: str | None = None) -> list[tuple[int, int, float]]:
    """Stored (bucket, shares, difficulty) from ``since`` on: the pool's, an address's or one worker's."""
    table = TABLES[resolution]
    if address is None:
        sql = f"SELECT bucket, shares, difficulty FROM {table} WHERE address = ? AND worker = ? AND bucket >= ?"
        params: tuple[Any, ...] = (POOL, POOL, since)
    elif worker is None:
        sql = (f"SELECT bucket, SUM(shares), SUM(difficulty) FROM {table} WHERE address = ? AND bucket >= ?"
               " GROUP BY bucket")
        params = (address, since)
    else:
        sql = (f"SELECT bucket, shares, difficulty FROM {table} WHERE address = ? AND worker = ?"
               " AND bucket >= ?")
        params = (address, worker, since)
    return [(int(b), int(n), float(d)) for b, n, d in query(sql, params)]


def series(rows: Iterable[tuple[int, int, float]], span: int, step: int, now: float) -> dict[str, Any]:
    """Chart points over the last ``span`` seconds, one per ``step`` (zero where no work was accepted).

    Each point is ``[start, hashes_per_second, shares]``; the newest step is still running, so its rate is
    over the time elapsed in it (at least a minute, so a step just begun does not read as a spike).
    """
    last = int(now // step) * step
    first = last - (span // step) * step + step
    shares = dict.fromkeys(range(first, last + step, step), 0)
    work = dict.fromkeys(shares, 0.0)
    for bucket, n, d in rows:
        key = bucket // step * step
        if key in shares:
            shares[key] += n
            work[key] += d
    points = []
    for start in shares:
        seconds = step if start < last else max(min(step, 60), now - start)
        points.append([start, work[start] * HASHES_PER_DIFF1 / seconds, shares[start]])
    return {"span": span, "step": step, "from": first, "to": now, "points": points}


# ---- the flusher -----------------------------------------------------------------------------------------


class Writer(Protocol):
    def submit(self, op: Callable[[Any], Any]) -> asyncio.Future[Any]: ...


@dataclass(frozen=True, slots=True)
class Retention:
    flush_interval: float = 15.0
    minutely_keep: float = 48 * 3600.0
    hourly_keep: float = 90 * 86400.0
    prune_interval: float = 600.0


class HistoryWriter:
    """Writes ``WorkHistory`` through the ledger's writer every ``flush_interval`` and prunes old rows."""

    def __init__(self, ledger: Writer, work: WorkHistory, retention: Retention,
                 clock: Callable[[], float] = time.time) -> None:
        self.ledger = ledger
        self.work = work
        self.retention = retention
        self.clock = clock
        self._last_prune = 0.0

    async def run(self) -> None:
        """The supervised loop: flush, and prune once per ``prune_interval``."""
        while True:
            await asyncio.sleep(self.retention.flush_interval)
            await self.flush()
            now = self.clock()
            if now - self._last_prune >= self.retention.prune_interval:
                self._last_prune = now
                await self.prune(now)

    async def flush(self) -> int:
        """Write what was accepted since the last flush; returns the minutely rows written."""
        rows = self.work.take()
        written = 0
        for i in range(0, len(rows), CHUNK):
            chunk = rows[i:i + CHUNK]
            try:
                written += await self.ledger.submit(lambda conn, c=chunk: write(conn, c))
            except Exception as exc:  # chart data: logged and dropped, never retried without bound
                log.error("history_flush_failed", rows=len(chunk), error=str(exc))
        return written

    async def prune(self, now: float | None = None) -> int:
        r = self.retention
        when = self.clock() if now is None else now
        try:
            removed = int(await self.ledger.submit(lambda conn: prune(conn, when, r.minutely_keep, r.hourly_keep)))
        except Exception as exc:  # retried at the next interval
            log.error("history_prune_failed", error=str(exc))
            return 0
        if removed:
            log.info("history_pruned", rows=removed)
        return removed
