"""The PPLNS window read from running totals, in time and memory bounded by the window, not the history.

Why: the window is N = factor × network difficulty of share difficulty. A pool below ~100 PH/s never fills it,
so a walk over the shares newest-first reads every share ever recorded, inside the single ledger writer, at
the moment a block is found. Instead every share row carries two running totals, written when it is inserted:

- ``cum``: the exact sum of the difficulty of every share up to and including this one (all workers);
- ``wcum``: the same sum over this share's (address, worker) only.

The window's oldest share is the first whose ``cum`` exceeds ``cum(newest) − N``: a binary search over the
primary key (about 30 row lookups). A worker's weight in the window is the difference of its ``wcum`` at its
newest and oldest share inside the window (two index lookups per worker); the oldest share of the window
counts only up to the edge, as in ``accounting.pplns_window``. Small windows are simply read row by row.

The totals are exact (difficulties are floats, i.e. dyadic rationals, summed without rounding), so the split
is identical, to the satoshi, to ``accounting.pplns_split`` over the same shares. A total is stored as a
BLOB: two bytes ``k`` then the big-endian integer ``n``, meaning n / 2**k.

Shares are only ever deleted from the old end (``rollup.py``), so the retained rows are a contiguous suffix
and every difference of totals inside it is the sum of the retained rows between.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from pool.ledger.accounting import Split, pplns_split_weighted
from pool.ledger.dialect import Conn

Exact = tuple[int, int]  # (n, k): the value n / 2**k, n >= 0
ZERO: Exact = (0, 0)
DIRECT_LIMIT = 20_000  # windows spanning at most this many ids are read row by row
BACKFILL_CHUNK = 50_000
PREFETCH_CHUNK = 400  # (address, worker) pairs per statement: 800 variables, below every SQLite's limit


def encode(value: Exact) -> bytes:
    n, k = value
    return k.to_bytes(2, "big") + n.to_bytes((n.bit_length() + 7) // 8, "big")


def decode(blob: bytes | None) -> Exact:
    if blob is None:
        raise ValueError("share row without running totals")
    return int.from_bytes(blob[2:], "big"), int.from_bytes(blob[:2], "big")


def to_fraction(value: Exact) -> Fraction:
    return Fraction(value[0], 1 << value[1])


def weight_of(difficulty: float) -> Exact:
    """The exact amount a share adds to the totals: its difficulty, or 0 if it is not a positive finite number
    (such a share takes no part in a PPLNS split, as ``accounting.pplns_window`` skips weights <= 0)."""
    if not (isinstance(difficulty, (int, float)) and math.isfinite(difficulty) and difficulty > 0):
        return ZERO
    p, q = float(difficulty).as_integer_ratio()
    return p, q.bit_length() - 1  # q is a power of two


def add(a: Exact, b: Exact) -> Exact:
    (na, ka), (nb, kb) = a, b
    k = max(ka, kb)
    return (na << (k - ka)) + (nb << (k - kb)), k


def next_totals(conn: Conn, address: str, worker: str, difficulty: float) -> tuple[bytes, bytes]:
    """(cum, wcum) for a share about to be inserted as the newest row."""
    w = weight_of(difficulty)
    cache = getattr(conn, "totals", None)  # PostgreSQL: prefetched for the batch (``prefetch``)
    if cache is not None and (address, worker) in cache[1]:
        cum_v, wcum_v = add(cache[0], w), add(cache[1][(address, worker)], w)
        cache[0] = cum_v
        cache[1][(address, worker)] = wcum_v
        return encode(cum_v), encode(wcum_v)
    # One statement for both (the hot path: every accepted share passes here).
    row = conn.execute("SELECT (SELECT cum FROM shares ORDER BY id DESC LIMIT 1),"
                       " (SELECT wcum FROM shares WHERE address=? AND worker=? ORDER BY id DESC LIMIT 1),"
                       " (SELECT 1 FROM shares LIMIT 1)", (address, worker)).fetchone()
    cum, wcum, any_row = row
    if any_row is not None and cum is None:  # rows written without totals (by hand): fill them in first
        backfill(conn)
        return next_totals(conn, address, worker, difficulty)
    cum_v = add(decode(cum), w) if cum is not None else w
    wcum_v = add(decode(wcum), w) if wcum is not None else w
    if cache is not None:  # a share not prefetched: the cache must still follow the newest row
        cache[0] = cum_v
        cache[1][(address, worker)] = wcum_v
    return encode(cum_v), encode(wcum_v)


def prefetch(conn: Any, keys: list[tuple[str, str]]) -> list[Any] | None:
    """PostgreSQL: the newest pool-wide total and each (address, worker)'s newest own total, and an id for each
    share, in one round trip, for the shares of a batch about to be inserted; ``next_totals`` then continues the
    totals in memory and ``book.insert_share`` needs no answer from the server (the inserts are pipelined). Valid only inside the writer's transaction (which holds the write lock, so no other
    node inserts meanwhile): ``pg.PgConnection`` drops it at every BEGIN, COMMIT and ROLLBACK. None when the
    newest row has no totals (``next_totals`` fills them in first)."""
    distinct = list(dict.fromkeys(keys))
    values = ", ".join("(?, ?)" for _ in distinct)
    rows = conn.execute(
        "SELECT k.a, k.w, (SELECT wcum FROM shares WHERE address = k.a AND worker = k.w ORDER BY id DESC LIMIT 1),"
        " (SELECT cum FROM shares ORDER BY id DESC LIMIT 1), (SELECT 1 FROM shares LIMIT 1),"
        " (SELECT array_agg(nextval(pg_get_serial_sequence('shares', 'id'))) FROM generate_series(1, ?))"
        f" FROM (VALUES {values}) AS k(a, w)", [len(keys), *(v for key in distinct for v in key)]).fetchall()
    # Ids for the batch's shares, drawn now (under the write lock: above every id so far); taken in order.
    conn.share_ids = sorted(rows[0][5], reverse=True) if rows and rows[0][5] else []
    if not rows or (rows[0][4] is not None and rows[0][3] is None):
        return None
    cum = decode(rows[0][3]) if rows[0][3] is not None else ZERO
    return [cum, {(a, w): decode(wcum) if wcum is not None else ZERO for a, w, wcum, _, _, _ in rows}]


def prefetch_sqlite(conn: Conn, keys: list[tuple[str, str]]) -> tuple[int, Exact, dict[tuple[str, str], Exact]] | None:
    """SQLite: what ``book.insert_share_run`` needs to write a run of shares without reading between rows: the
    newest id, the newest pool-wide total and each (address, worker)'s newest own total. Valid only inside the
    writer's ``BEGIN IMMEDIATE`` transaction (it holds the write lock). None when the newest row has no totals
    (``next_totals`` fills them in first)."""
    head = conn.execute("SELECT (SELECT id FROM shares ORDER BY id DESC LIMIT 1),"
                        " (SELECT cum FROM shares ORDER BY id DESC LIMIT 1)").fetchone()
    newest, cum = head
    if newest is not None and cum is None:
        return None
    own: dict[tuple[str, str], Exact] = {}
    for start in range(0, len(keys), PREFETCH_CHUNK):
        chunk = keys[start:start + PREFETCH_CHUNK]
        values = ", ".join("(?, ?)" for _ in chunk)
        for a, w, wcum in conn.execute(
                f"WITH k(a, w) AS (VALUES {values}) SELECT k.a, k.w, (SELECT wcum FROM shares"
                " WHERE address = k.a AND worker = k.w ORDER BY id DESC LIMIT 1) FROM k",
                [v for key in chunk for v in key]):
            own[(a, w)] = decode(wcum) if wcum is not None else ZERO
    return (newest or 0), (decode(cum) if cum is not None else ZERO), own


def migrate(conn: Conn) -> None:
    """Bring a ledger written by an older version up to date: add the running-total columns and fill them."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(shares)")}
    for name in ("cum", "wcum"):
        if name not in columns:
            conn.execute(f"ALTER TABLE shares ADD COLUMN {name} BLOB")
    backfill(conn)


def backfill(conn: Conn, chunk: int = BACKFILL_CHUNK) -> int:
    """Compute the totals of rows that lack them, oldest first, one chunk per transaction when not already in
    one (resumable: each chunk continues from the rows before it). Returns the number of rows filled."""
    filled = 0
    own = not conn.in_transaction
    while True:
        if own:
            conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute("SELECT id, address, worker, difficulty FROM shares WHERE cum IS NULL ORDER BY id"
                            " LIMIT ?", (chunk,)).fetchall()
        if not rows:
            if own:
                conn.execute("COMMIT")
            return filled
        prev = conn.execute("SELECT cum FROM shares WHERE id < ? ORDER BY id DESC LIMIT 1",
                            (rows[0][0],)).fetchone()
        cum = decode(prev[0]) if prev else ZERO
        workers: dict[tuple[str, str], Exact] = {}
        updates = []
        for share_id, address, worker, difficulty in rows:
            key = (address, worker)
            if key not in workers:
                wprev = conn.execute("SELECT wcum FROM shares WHERE address=? AND worker=? AND id<? ORDER BY id"
                                     " DESC LIMIT 1", (address, worker, share_id)).fetchone()
                workers[key] = decode(wprev[0]) if wprev else ZERO
            w = weight_of(difficulty)
            cum = add(cum, w)
            workers[key] = add(workers[key], w)
            updates.append((encode(cum), encode(workers[key]), share_id))
        conn.executemany("UPDATE shares SET cum=?, wcum=? WHERE id=?", updates)
        filled += len(updates)
        if own:
            conn.execute("COMMIT")


def first_in_window(conn: Conn, last_id: int, window: Fraction) -> int | None:
    """Id of the oldest share (id <= ``last_id``) the window of ``window`` difficulty reaches; None if empty.

    Share i is in the window iff the shares newer than it (up to ``last_id``) sum to less than N, i.e.
    cum(i) > cum(last) − N; cum is non-decreasing in id, so a binary search finds the first such row."""
    row = conn.execute("SELECT cum FROM shares WHERE id=?", (last_id,)).fetchone()
    if row is None or window <= 0:
        return None
    edge = to_fraction(decode(row[0])) - window
    lo_row = conn.execute("SELECT id FROM shares ORDER BY id LIMIT 1").fetchone()
    lo, hi = int(lo_row[0]), last_id
    # Search over id values, not rows: ids may have gaps (rows deleted by hand), and narrowing ``hi`` to a row
    # found past a gap would stop the search from moving (a hang inside the ledger writer at a found block).
    while lo < hi:
        mid = (lo + hi) // 2
        rid, cum = conn.execute("SELECT id, cum FROM shares WHERE id>=? ORDER BY id LIMIT 1", (mid,)).fetchone()
        if to_fraction(decode(cum)) > edge:
            hi = mid
        else:
            lo = rid + 1
    return int(conn.execute("SELECT id FROM shares WHERE id>=? ORDER BY id LIMIT 1", (lo,)).fetchone()[0])


def pplns_weights(conn: Conn, last_id: int, window: Fraction, direct_limit: int = DIRECT_LIMIT
                  ) -> tuple[list[tuple[tuple[str, str], Fraction]], int | None, int | None]:
    """Per-worker weights of the window ending at ``last_id``, and its oldest and newest share ids."""
    first = first_in_window(conn, last_id, window)
    if first is None:
        return [], None, None
    last_cum = to_fraction(decode(conn.execute("SELECT cum FROM shares WHERE id=?", (last_id,)).fetchone()[0]))
    f_id, f_address, f_worker, f_difficulty, f_cum = conn.execute(
        "SELECT id, address, worker, difficulty, cum FROM shares WHERE id=?", (first,)).fetchone()
    # The oldest share counts up to the window's edge: N minus what the newer shares already hold.
    f_full = to_fraction(weight_of(f_difficulty))
    f_weight = min(f_full, window - (last_cum - to_fraction(decode(f_cum))))
    weights: dict[tuple[str, str], Fraction] = {}
    if last_id - first < direct_limit:
        sums: dict[tuple[str, str], Exact] = {}
        rows = conn.execute("SELECT address, worker, difficulty FROM shares WHERE id>? AND id<=? ORDER BY id",
                            (first, last_id))
        for address, worker, difficulty in rows:
            w = weight_of(difficulty)
            if w[0]:
                sums[(address, worker)] = add(sums.get((address, worker), ZERO), w)
        weights = {key: to_fraction(value) for key, value in sums.items()}
    else:
        for address, worker in _workers(conn):
            earliest = conn.execute("SELECT id, wcum, difficulty FROM shares WHERE address=? AND worker=? AND id>?"
                                    " ORDER BY id LIMIT 1", (address, worker, first)).fetchone()
            if earliest is None or earliest[0] > last_id:
                continue
            latest = conn.execute("SELECT wcum FROM shares WHERE address=? AND worker=? AND id<=? ORDER BY id DESC"
                                  " LIMIT 1", (address, worker, last_id)).fetchone()
            total = (to_fraction(decode(latest[0])) - to_fraction(decode(earliest[1]))
                     + to_fraction(weight_of(earliest[2])))
            if total > 0:
                weights[(address, worker)] = total
    if f_weight > 0:
        key = (f_address, f_worker)
        weights[key] = weights.get(key, Fraction(0)) + f_weight
    if not weights:
        return [], None, None
    newest = conn.execute("SELECT id FROM shares WHERE id<=? AND difficulty>0 ORDER BY id DESC LIMIT 1",
                          (last_id,)).fetchone()[0]
    if f_weight > 0:
        oldest_id = f_id
    else:  # a zero-difficulty oldest row (only in ledgers from before shares were validated) takes no part
        oldest_id = conn.execute("SELECT id FROM shares WHERE id>? AND difficulty>0 ORDER BY id LIMIT 1",
                                 (f_id,)).fetchone()[0]
    return sorted(weights.items()), oldest_id, newest


def _workers(conn: Conn) -> Iterator[tuple[str, str]]:
    """Every distinct (address, worker) in the shares table, by hops along the (address, worker) index:
    O(workers × log shares), never a scan of the rows."""
    row = conn.execute("SELECT address, worker FROM shares ORDER BY address, worker LIMIT 1").fetchone()
    while row is not None:
        yield row[0], row[1]
        # Two plain seeks: SQLite serves a row-value ``(address, worker) > (?, ?)`` by scanning the address.
        row = (conn.execute("SELECT address, worker FROM shares WHERE address=? AND worker>? ORDER BY worker"
                            " LIMIT 1", (row[0], row[1])).fetchone()
               or conn.execute("SELECT address, worker FROM shares WHERE address>? ORDER BY address, worker"
                               " LIMIT 1", (row[0],)).fetchone())


def pplns_split_from_totals(conn: Conn, reward: int, fee_bp: int, last_id: int | None,
                            network_difficulty: float, factor: float, direct_limit: int = DIRECT_LIMIT) -> Split:
    """The PPLNS split of the window ending at ``last_id``: equal to ``accounting.pplns_split`` over the
    shares up to ``last_id`` newest first."""
    window = Fraction(factor) * Fraction(network_difficulty)
    if last_id is None:
        return pplns_split_weighted(reward, fee_bp, [], None, None)
    weights, first_id, newest_id = pplns_weights(conn, last_id, window, direct_limit)
    return pplns_split_weighted(reward, fee_bp, weights, first_id, newest_id)
