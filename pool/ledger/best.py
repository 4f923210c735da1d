"""Best shares in the ledger: one row per worker, written only when a share beats the worker's record.

Portable SQL (plain types, ``INSERT ... ON CONFLICT ... DO UPDATE``, ``CASE`` rather than SQLite's two-argument
``MAX``) so the same statements run on SQLite and PostgreSQL. The upsert keeps the larger value whatever the
order of writes, and a newer round replaces an older round's best, so concurrent or replayed writes cannot
lower a record.
"""

from __future__ import annotations

import sqlite3
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS best_shares (
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    best REAL NOT NULL,
    best_at REAL NOT NULL,
    round_no INTEGER NOT NULL,
    round_best REAL NOT NULL,
    round_best_at REAL NOT NULL,
    PRIMARY KEY (address, worker)
);
"""

UPSERT = """
INSERT INTO best_shares (address, worker, best, best_at, round_no, round_best, round_best_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (address, worker) DO UPDATE SET
    best = CASE WHEN excluded.best > best_shares.best THEN excluded.best ELSE best_shares.best END,
    best_at = CASE WHEN excluded.best > best_shares.best THEN excluded.best_at ELSE best_shares.best_at END,
    round_best = CASE
        WHEN excluded.round_no > best_shares.round_no THEN excluded.round_best
        WHEN excluded.round_no = best_shares.round_no AND excluded.round_best > best_shares.round_best
            THEN excluded.round_best
        ELSE best_shares.round_best END,
    round_best_at = CASE
        WHEN excluded.round_no > best_shares.round_no THEN excluded.round_best_at
        WHEN excluded.round_no = best_shares.round_no AND excluded.round_best > best_shares.round_best
            THEN excluded.round_best_at
        ELSE best_shares.round_best_at END,
    round_no = CASE WHEN excluded.round_no > best_shares.round_no THEN excluded.round_no ELSE best_shares.round_no END
"""

Row = tuple[str, str, float, float, int, float, float]


def upsert(conn: sqlite3.Connection, rows: list[Row]) -> None:
    """Raise the records of these workers (run inside the ledger writer's transaction)."""
    conn.executemany(UPSERT, rows)


def current_round(conn: sqlite3.Connection) -> int:
    """The round number: blocks the pool has found so far (each found block starts a new round)."""
    return int(conn.execute("SELECT COUNT(*) FROM blocks").fetchone()[0])


def load(conn: sqlite3.Connection) -> tuple[list[Row], int]:
    rows = conn.execute(
        "SELECT address, worker, best, best_at, round_no, round_best, round_best_at FROM best_shares"
    ).fetchall()
    return rows, current_round(conn)


def for_address(conn: sqlite3.Connection, address: str) -> list[dict[str, Any]]:
    """Per worker of ``address``: all-time best, and the round best if it belongs to the current round."""
    round_no = current_round(conn)
    rows = conn.execute(
        "SELECT worker, best, best_at, round_no, round_best, round_best_at FROM best_shares WHERE address = ?"
        " ORDER BY worker",
        (address,),
    ).fetchall()
    return [
        {"worker": worker, "best": best, "best_at": best_at,
         "round_best": round_best if row_round == round_no else 0.0,
         "round_best_at": round_best_at if row_round == round_no else None}
        for worker, best, best_at, row_round, round_best, round_best_at in rows
    ]
