"""Ledger operations on an open connection (SQLite, or PostgreSQL through ``pg.PgConnection``), each run inside
the writer's transaction. The SQL is the subset both engines run (see ``dialect.py``).

The accounting itself lives in ``accounting.py`` (pure); this module only reads the rows it needs, calls it,
and writes the results plus their audit entries. Every state change of a block, credit or payment appends
to the hash-chained audit log in the same transaction, so the log and the tables cannot disagree.

The audit log is append-only and hash-chained: each entry's hash covers the previous entry's hash and the
entry's canonical JSON, so editing, deleting or reordering any past row breaks every hash after it; ``verify``
finds the first broken link.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from pool.ledger import history, window
from pool.ledger.accounting import Split, pps_value, solo_split
from pool.ledger.dialect import Conn

GENESIS = "0" * 64


def canonical(payload: dict[str, Any]) -> str:
    """Deterministic JSON (sorted keys, no spaces) so any tool can recompute the hashes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(prev_hash: str, seq: int, ts: float, kind: str, payload_json: str) -> str:
    material = f"{prev_hash}|{seq}|{ts!r}|{kind}|{payload_json}".encode()
    return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    ts: float
    kind: str
    payload: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    entries: int
    first_bad_seq: int | None
    reason: str


def verify(entries: Iterable[AuditEntry]) -> VerifyResult:
    """Walk the chain from the start; report the first entry whose link or hash does not hold."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    for e in entries:
        count += 1
        if e.seq != expected_seq:
            return VerifyResult(False, count, e.seq, f"sequence gap: expected {expected_seq}, found {e.seq}")
        if e.prev_hash != prev:
            return VerifyResult(False, count, e.seq, "prev_hash does not match the previous entry")
        if entry_hash(e.prev_hash, e.seq, e.ts, e.kind, e.payload) != e.hash:
            return VerifyResult(False, count, e.seq, "hash does not match the entry's content")
        try:
            json.loads(e.payload)
        except ValueError:
            return VerifyResult(False, count, e.seq, "payload is not JSON")
        prev = e.hash
        expected_seq += 1
    return VerifyResult(True, count, None, "ok")


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
    is_block INTEGER NOT NULL DEFAULT 0,
    cum BLOB,
    wcum BLOB
);
CREATE INDEX IF NOT EXISTS shares_address ON shares(address, worker);
CREATE TABLE IF NOT EXISTS share_rollup (
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    hour INTEGER NOT NULL,
    shares INTEGER NOT NULL,
    difficulty REAL NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    last_ts REAL NOT NULL,
    PRIMARY KEY (address, worker, hour)
);
CREATE TABLE IF NOT EXISTS blocks (
    block_hash TEXT PRIMARY KEY,
    height INTEGER NOT NULL,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    reward INTEGER NOT NULL,
    subsidy INTEGER NOT NULL DEFAULT 0,
    network_difficulty REAL NOT NULL DEFAULT 0,
    scheme TEXT NOT NULL DEFAULT 'pplns',
    fee INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    confirmations INTEGER NOT NULL DEFAULT 0,
    found_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_share_id INTEGER
);
CREATE TABLE IF NOT EXISTS credits (
    id INTEGER PRIMARY KEY,
    block_hash TEXT,
    share_id INTEGER,
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    amount INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    share_difficulty REAL,
    network_difficulty REAL
);
CREATE INDEX IF NOT EXISTS credits_block ON credits(block_hash);
CREATE INDEX IF NOT EXISTS credits_address ON credits(address, status);
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY,
    batch TEXT NOT NULL,
    address TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL,
    txid TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_batch ON payments(batch);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"""
SCHEMA += history.SCHEMA  # chart roll-ups of accepted work (history.py)

# Block states and what they mean for the block's credits.
PENDING, CONFIRMED, ORPHANED, REJECTED = "pending", "confirmed", "orphaned", "rejected"
CREDIT_STATUS_FOR_BLOCK = {PENDING: "pending", CONFIRMED: "payable", ORPHANED: "void", REJECTED: "void"}


@dataclass(frozen=True, slots=True)
class Policy:
    """Accounting settings the writer applies (from the payout config)."""

    scheme: str = "pplns"
    fee_bp: int = 100
    pplns_factor: float = 2.0


def read_audit(conn: Conn) -> list[AuditEntry]:
    """The whole audit log in order, as ``verify`` reads it."""
    rows = conn.execute("SELECT seq, ts, kind, payload, prev_hash, hash FROM audit ORDER BY seq").fetchall()
    return [AuditEntry(*row) for row in rows]


def audit(conn: Conn, kind: str, payload: dict[str, Any]) -> str:
    row = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    ts = time.time()
    body = canonical(payload)
    digest = entry_hash(prev, seq, ts, kind, body)
    conn.execute("INSERT INTO audit (seq, ts, kind, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
                 (seq, ts, kind, body, prev, digest))
    return digest


def migrate(conn: Conn) -> None:
    """Bring a SQLite ledger file written before schema versioning up to this schema (idempotent); later changes
    are numbered steps in ``schema.MIGRATIONS``."""
    window.migrate(conn)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(credits)")}
    # Each column on its own: a crash between two ALTERs (autocommit) must not leave one missing for good.
    if "share_difficulty" not in columns:
        conn.execute("ALTER TABLE credits ADD COLUMN share_difficulty REAL")
        conn.execute("UPDATE credits SET share_difficulty = (SELECT difficulty FROM shares WHERE id = share_id)"
                     " WHERE share_id IS NOT NULL")
    if "network_difficulty" not in columns:
        conn.execute("ALTER TABLE credits ADD COLUMN network_difficulty REAL")


def insert_share(conn: Conn, policy: Policy, s: Any, network_difficulty: float, subsidy: int,
                 expected_fees: int) -> int:
    """One accepted share; under PPS/FPPS also its credit, which carries the share's and the network's
    difficulty so it stays auditable after the share row is rolled up."""
    if not (isinstance(s.difficulty, (int, float)) and math.isfinite(s.difficulty) and s.difficulty > 0):
        raise ValueError(f"share difficulty must be a positive number, not {s.difficulty!r}")
    cum, wcum = window.next_totals(conn, s.address, s.worker, s.difficulty)
    values = (s.ts, s.address, s.worker, s.difficulty, s.share_difficulty, s.job_id, s.height, s.block_hash,
              int(s.is_block), cum, wcum)
    take = getattr(conn, "take_share_id", None)  # PostgreSQL batch: ids drawn ahead (window.prefetch)
    share_id = take() if take is not None else None
    if share_id is not None:  # nothing to wait for: the insert can travel with the rest of the batch
        conn.execute("INSERT INTO shares (id, ts, address, worker, difficulty, share_difficulty, job_id, height,"
                     " block_hash, is_block, cum, wcum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", (share_id, *values))
    else:
        share_id = int(conn.execute(
            "INSERT INTO shares (ts, address, worker, difficulty, share_difficulty, job_id, height, block_hash,"
            " is_block, cum, wcum) VALUES (?,?,?,?,?,?,?,?,?,?,?) RETURNING id", values).fetchone()[0])
    if policy.scheme in ("pps", "fpps") and network_difficulty > 0:
        fees = expected_fees if policy.scheme == "fpps" else 0
        amount = pps_value(s.difficulty, network_difficulty, subsidy, policy.fee_bp, fees)
        if amount > 0:
            conn.execute(
                "INSERT INTO credits (block_hash, share_id, address, worker, amount, kind, status, created_at,"
                " share_difficulty, network_difficulty) VALUES (NULL,?,?,?,?,?,?,?,?,?)",
                (share_id, s.address, s.worker, amount, policy.scheme, "payable", s.ts, s.difficulty,
                 network_difficulty),
            )
    return share_id


def insert_share_run(conn: Conn, policy: Policy, shares: list[Any]) -> list[int] | None:
    """SQLite: a run of accepted shares (consecutive in the writer's batch) as one multi-row INSERT, with the
    same ids, totals and credits ``insert_share`` one by one would give. None (nothing written) when the
    totals must be filled in first; the caller then inserts one by one.

    Why: every statement the writer thread runs releases the GIL around SQLite and must win it back. While
    the event loop fans a new tip out and another thread decodes the template, each win waits up to a switch
    interval, so a writer running two statements per share took 15-50 ms to commit a handful of shares at
    every new tip, and the accepted shares' answers waited for it. A run costs three statements, whatever
    its length (plus one for PPS credits)."""
    for s in shares:
        if not (isinstance(s.difficulty, (int, float)) and math.isfinite(s.difficulty) and s.difficulty > 0):
            raise ValueError(f"share difficulty must be a positive number, not {s.difficulty!r}")
    state = window.prefetch_sqlite(conn, list(dict.fromkeys((s.address, s.worker) for s in shares)))
    if state is None:
        return None
    newest, cum, own = state
    rows: list[tuple[Any, ...]] = []
    credits: list[tuple[Any, ...]] = []
    pps = policy.scheme in ("pps", "fpps")
    for s in shares:
        w = window.weight_of(s.difficulty)
        key = (s.address, s.worker)
        cum = window.add(cum, w)
        own[key] = wcum = window.add(own[key], w)
        newest += 1
        rows.append((newest, s.ts, s.address, s.worker, s.difficulty, s.share_difficulty, s.job_id, s.height,
                     s.block_hash, int(s.is_block), window.encode(cum), window.encode(wcum)))
        if pps and s.network_difficulty > 0:
            fees = s.expected_fees if policy.scheme == "fpps" else 0
            amount = pps_value(s.difficulty, s.network_difficulty, s.subsidy, policy.fee_bp, fees)
            if amount > 0:
                credits.append((newest, s.address, s.worker, amount, policy.scheme, "payable", s.ts, s.difficulty,
                                s.network_difficulty))
    _insert_rows(conn, "INSERT INTO shares (id, ts, address, worker, difficulty, share_difficulty, job_id, height,"
                 " block_hash, is_block, cum, wcum) VALUES ", rows)
    _insert_rows(conn, "INSERT INTO credits (block_hash, share_id, address, worker, amount, kind, status,"
                 " created_at, share_difficulty, network_difficulty) VALUES ", credits, prefix="NULL,")
    return [row[0] for row in rows]


RUN_ROWS = 64  # rows per multi-row INSERT: few distinct statement texts to prepare, few GIL hand-offs


def _insert_rows(conn: Conn, head: str, rows: list[tuple[Any, ...]], prefix: str = "") -> None:
    if not rows:
        return
    width = len(rows[0])
    one = "(" + prefix + ",".join("?" * width) + ")"
    for start in range(0, len(rows), RUN_ROWS):
        chunk = rows[start:start + RUN_ROWS]
        conn.execute(head + ",".join([one] * len(chunk)), [v for row in chunk for v in row])


def insert_block(conn: Conn, policy: Policy, b: Any) -> dict[str, Any]:
    """Record a found block and, under PPLNS/SOLO, its credits (pending until it matures)."""
    if conn.execute("SELECT 1 FROM blocks WHERE block_hash=?", (b.block_hash,)).fetchone():
        return {"duplicate": True}
    last_share = conn.execute("SELECT MAX(id) FROM shares").fetchone()[0]
    if policy.scheme == "pplns":
        # From the running totals: bounded by the window (and the number of workers), not by the history.
        split = window.pplns_split_from_totals(conn, b.reward, policy.fee_bp, last_share, b.network_difficulty,
                                               policy.pplns_factor)
    elif policy.scheme == "solo":
        split = solo_split(b.reward, policy.fee_bp, (b.address, b.worker), getattr(b, "fee", None))
    else:  # PPS/FPPS: shares were paid as they came; the whole block belongs to the pool
        split = Split(b.reward, b.reward, {}, Fraction(0), None, None)
    now = time.time()
    conn.execute(
        "INSERT INTO blocks (block_hash, height, address, worker, reward, subsidy, network_difficulty, scheme, fee,"
        " status, confirmations, found_at, updated_at, last_share_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (b.block_hash, b.height, b.address, b.worker, b.reward, b.subsidy, b.network_difficulty, policy.scheme,
         split.fee, PENDING, 0, b.found_at, now, last_share),
    )
    credit_status = "onchain" if policy.scheme == "solo" else "pending"
    kind = "solo" if policy.scheme == "solo" else "pplns"
    for (address, worker), amount in sorted(split.credits.items()):
        conn.execute(
            "INSERT INTO credits (block_hash, share_id, address, worker, amount, kind, status, created_at)"
            " VALUES (?,NULL,?,?,?,?,?,?)",
            (b.block_hash, address, worker, amount, kind, credit_status, now),
        )
    payload = {
        "block_hash": b.block_hash, "height": b.height, "finder": f"{b.address}.{b.worker}", "reward": b.reward,
        "fee": split.fee, "scheme": policy.scheme, "window_difficulty": str(split.window_difficulty),
        "first_share_id": split.first_share_id, "last_share_id": split.last_share_id,
        "credits": [[a, w, v] for (a, w), v in sorted(split.credits.items())],
    }
    audit(conn, "block_found", payload)
    return payload


def set_block_status(conn: Conn, block_hash: str, status: str, confirmations: int) -> bool:
    """Move a block to a new state; its credits follow (confirmed → payable, orphaned → void, back again)."""
    row = conn.execute("SELECT status, scheme FROM blocks WHERE block_hash=?", (block_hash,)).fetchone()
    if row is None:
        return False
    old, scheme = row
    conn.execute("UPDATE blocks SET confirmations=?, updated_at=? WHERE block_hash=?",
                 (confirmations, time.time(), block_hash))
    if old == status:
        return False
    conn.execute("UPDATE blocks SET status=? WHERE block_hash=?", (status, block_hash))
    if scheme == "pplns":
        # A block orphaned after its credits were paid leaves a negative balance that later credits repay.
        new_credit = CREDIT_STATUS_FOR_BLOCK[status]
        conn.execute("UPDATE credits SET status=? WHERE block_hash=? AND kind='pplns'", (new_credit, block_hash))
    elif scheme == "solo":
        # The coinbase paid the finder; if the block leaves the chain, so does that payment.
        solo_status = "void" if status in (ORPHANED, REJECTED) else "onchain"
        conn.execute("UPDATE credits SET status=? WHERE block_hash=? AND kind='solo'", (solo_status, block_hash))
    audit(conn, "block_status", {"block_hash": block_hash, "from": old, "to": status, "confirmations": confirmations})
    return True


def balances(conn: Conn) -> dict[str, int]:
    """Payable balance per address: payable credits minus payments sending or sent."""
    owed = dict(conn.execute(
        "SELECT address, SUM(amount) FROM credits WHERE status='payable' GROUP BY address").fetchall())
    paid = dict(conn.execute(
        "SELECT address, SUM(amount) FROM payments WHERE status IN ('sending','sent') GROUP BY address").fetchall())
    return {a: int(owed.get(a, 0)) - int(paid.get(a, 0)) for a in set(owed) | set(paid)}


def create_payments(conn: Conn, batch: str, threshold: int) -> list[tuple[str, int]]:
    """Record, before anything is sent, a payment for every address at or above the threshold; nothing while
    an earlier batch is still ``sending`` (its outcome unknown). Checked inside the write transaction, so two
    pool nodes sharing one ledger can never both start a batch for the same balances."""
    if conn.execute("SELECT 1 FROM payments WHERE status='sending' LIMIT 1").fetchone() is not None:
        return []
    due = sorted((a, v) for a, v in balances(conn).items() if v >= threshold and v > 0)
    now = time.time()
    for address, amount in due:
        conn.execute(
            "INSERT INTO payments (batch, address, amount, status, txid, created_at, updated_at)"
            " VALUES (?,?,?,?,NULL,?,?)",
            (batch, address, amount, "sending", now, now),
        )
    if due:
        audit(conn, "payment_created", {"batch": batch, "payments": [[a, v] for a, v in due]})
    return due


def finish_payments(conn: Conn, batch: str, status: str, txid: str | None) -> None:
    conn.execute("UPDATE payments SET status=?, txid=?, updated_at=? WHERE batch=? AND status='sending'",
                 (status, txid, time.time(), batch))
    audit(conn, "payment_" + status, {"batch": batch, "txid": txid})
