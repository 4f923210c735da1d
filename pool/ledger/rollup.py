"""Share rows past any window rolled up into per-(address, worker, hour) totals and deleted, in small batches.

Why: every accepted share is a row, ~26 M a month for a 100-connection pool; kept forever they make the file
and every report grow with the whole history. A share row is only needed while it can still enter a PPLNS
window (and, for investigation, for ``keep_seconds`` after it was recorded). Older rows are folded into
``share_rollup`` (count, difficulty sum, last share time per worker and hour: what the reports show) and
deleted, oldest first, ``batch`` rows per transaction on a connection of their own, so no share commit ever
waits for more than one short batch. PPS/FPPS credits carry their share's difficulty and the network
difficulty (``book.insert_share``), so they need no share row.

Never deleted: the shares of the current PPLNS window at the current network difficulty, times a margin for a
difficulty rise (the window's rows are found with ``window.first_in_window``), and the newest row. The audit log is untouched: no audited entry
refers to a share row.

Reports read the rolled-up totals plus the remaining rows (``share_totals``); a roll-up changes none of their
numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from pool.ledger import dialect, window
from pool.ledger.dialect import Conn

BATCH = 10_000
KEEP_SECONDS = 86_400.0
# Rows kept reach this many times the current window: mainnet's difficulty can rise up to 4x at one retarget,
# and the next block's window must not reach rows already rolled up.
WINDOW_MARGIN = 4.0


def _first_id_from(conn: Conn, ts: float) -> int | None:
    """Id of the oldest row recorded at or after ``ts`` (ids follow time: a binary search on the key)."""
    bounds = conn.execute("SELECT MIN(id), MAX(id) FROM shares").fetchone()
    if bounds[0] is None:
        return None
    lo, hi = int(bounds[0]), int(bounds[1]) + 1  # hi: "no row is that recent"
    while lo < hi:  # over id values, not rows: a gap in ids must not stop the search from moving
        mid = (lo + hi) // 2
        row = conn.execute("SELECT id, ts FROM shares WHERE id>=? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if row is None or row[1] >= ts:
            hi = mid
        else:
            lo = row[0] + 1
    row = conn.execute("SELECT id FROM shares WHERE id>=? ORDER BY id LIMIT 1", (lo,)).fetchone()
    return int(row[0]) if row is not None else lo


def cutoff(conn: Conn, scheme: str, factor: float, network_difficulty: float,
           keep_seconds: float, now: float, margin: float = WINDOW_MARGIN) -> int | None:
    """Rows with id below the returned id may be rolled up; None: none may."""
    last = conn.execute("SELECT MAX(id) FROM shares").fetchone()[0]
    if last is None:
        return None
    bound = int(last)  # the newest row stays: the next share's running totals continue from it
    recent = _first_id_from(conn, now - keep_seconds)
    if recent is not None:
        bound = min(bound, recent)
    if scheme == "pplns":
        if not network_difficulty > 0:
            return None  # the window is unknown: keep everything
        n = Fraction(margin) * Fraction(factor) * Fraction(network_difficulty)
        first = window.first_in_window(conn, int(last), n)
        if first is None:
            return None
        bound = min(bound, first)
    return bound


def rollup_batch(conn: Conn, below: int, batch: int = BATCH) -> int:
    """Fold the oldest ``batch`` rows with id < ``below`` into ``share_rollup`` and delete them; in the caller's
    transaction. Returns the number of rows removed."""
    row = conn.execute("SELECT id FROM shares WHERE id < ? ORDER BY id LIMIT 1 OFFSET ?",
                       (below, batch - 1)).fetchone()
    upper = int(row[0]) if row else below - 1
    d = dialect.of(conn)
    hour = d.hour("ts")
    conn.execute(
        "INSERT INTO share_rollup (address, worker, hour, shares, difficulty, first_id, last_id, last_ts)"
        f" SELECT address, worker, {hour}, COUNT(*), SUM(difficulty), MIN(id), MAX(id), MAX(ts)"
        f" FROM shares WHERE id <= ? GROUP BY address, worker, {hour}"
        " ON CONFLICT (address, worker, hour) DO UPDATE SET shares = share_rollup.shares + excluded.shares,"
        " difficulty = share_rollup.difficulty + excluded.difficulty,"
        f" first_id = {d.least('share_rollup.first_id', 'excluded.first_id')},"
        f" last_id = {d.greatest('share_rollup.last_id', 'excluded.last_id')},"
        f" last_ts = {d.greatest('share_rollup.last_ts', 'excluded.last_ts')}",
        (upper,),
    )
    return conn.execute("DELETE FROM shares WHERE id <= ?", (upper,)).rowcount


def prune(conn: Conn, scheme: str, factor: float, network_difficulty: float,
          keep_seconds: float = KEEP_SECONDS, batch: int = BATCH, max_batches: int | None = None,
          now: float | None = None, margin: float = WINDOW_MARGIN, stop: Callable[[], bool] | None = None) -> int:
    """Roll up every prunable row, one ``batch`` per short transaction on ``conn`` (autocommit mode, not the
    writer's connection). The bound is recomputed inside each transaction, so shares written meanwhile and
    a window that moved are respected. ``stop`` is asked between batches (the ledger is closing). Returns the
    number of rows rolled up."""
    done = 0
    batches = 0
    while (max_batches is None or batches < max_batches) and not (stop is not None and stop()):
        conn.execute("BEGIN IMMEDIATE")
        try:
            below = cutoff(conn, scheme, factor, network_difficulty, keep_seconds,
                           time.time() if now is None else now, margin)
            removed = rollup_batch(conn, below, batch) if below is not None else 0
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        done += removed
        batches += 1
        if removed < batch:
            break
    return done


def _has_rollup(conn: Conn) -> bool:
    return conn.execute(dialect.of(conn).table_exists_sql(), ("share_rollup",)).fetchone() is not None


def totals_sql(conn: Conn, where: str = "") -> str:
    """SQL for (address, worker, shares, difficulty, last_ts) per worker over rolled-up and remaining rows
    (a ledger from before roll-ups, opened read-only, has only the rows)."""
    parts = [f"SELECT address, worker, COUNT(*) AS n, SUM(difficulty) AS d, MAX(ts) AS t FROM shares {where}"
             " GROUP BY address, worker"]
    if _has_rollup(conn):
        parts.append(f"SELECT address, worker, SUM(shares), SUM(difficulty), MAX(last_ts) FROM share_rollup {where}"
                     " GROUP BY address, worker")
    return ("SELECT address, worker, SUM(n) AS shares, SUM(d) AS difficulty, MAX(t) AS last_ts FROM ("
            + " UNION ALL ".join(parts) + ") AS t GROUP BY address, worker")


def share_totals(conn: Conn, address: str | None = None) -> list[tuple[Any, ...]]:
    """[(address, worker, shares, difficulty, last_ts)] ordered by address, worker; one address if given."""
    if address is None:
        return conn.execute(totals_sql(conn) + " ORDER BY address, worker").fetchall()
    return conn.execute(totals_sql(conn, "WHERE address = :a") + " ORDER BY address, worker", {"a": address}).fetchall()
