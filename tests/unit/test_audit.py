"""The hash-chained audit log on both ledger backends: append-only (SQLite and PostgreSQL triggers), verification
finds the first bad entry, CLI verify/export."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pool import reports
from pool.ledger import book, pg
from pool.ledger.book import GENESIS, AuditEntry, Policy, canonical, entry_hash, verify
from pool.ledger.sqlite import BlockRecord, Ledger, ShareRecord

ROOT = Path(__file__).resolve().parents[2]
A, B = "bcrt1qaddressaaaa", "bcrt1qaddressbbbb"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pool", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def _share(address: str, h: str, is_block: bool = False) -> ShareRecord:
    return ShareRecord(time.time(), address, "w", 1.0, 2.0, "j", 101, h, is_block)


@pytest.fixture
async def populated(ledger_target):
    """A closed ledger (SQLite file or PostgreSQL database) holding a dozen audit entries of every kind."""
    ledger = Ledger(ledger_target(), Policy("pplns", 100, 2.0))
    try:
        n = 0
        for i in range(3):
            for j in range(4):
                n += 1
                await ledger.record_share(_share(A if j % 2 else B, f"{n:064x}"))
            n += 1
            h = f"{n:064x}"
            ledger.record_share(_share(A, h, True))
            await ledger.record_block(BlockRecord(h, 101 + i, A, "w", 50 * 10**8, 50 * 10**8, 3.0, time.time()))
            await ledger.set_block_status(h, "confirmed", 101)
        ledger.run_sync(lambda c: book.create_payments(c, "b1", 1000))
        ledger.run_sync(lambda c: book.finish_payments(c, "b1", "sent", "ab" * 32))
        await ledger.set_block_status(h, "orphaned", -1)
    finally:
        ledger.close()
    return ledger.url or ledger.path


@pytest.fixture
def copy_ledger(ledger_target):
    return ledger_target.copy


def _open(target: Path | str) -> object:
    """A read-write connection (``?`` placeholders on both backends)."""
    if pg.is_url(target):
        return pg.connect(str(target))
    return sqlite3.connect(target, isolation_level=None)


def _unlocked(target: Path | str) -> object:
    conn = _open(target)
    on = " ON audit" if pg.is_url(target) else ""
    conn.execute(f"DROP TRIGGER audit_no_update{on}")
    conn.execute(f"DROP TRIGGER audit_no_delete{on}")
    return conn


APPEND_ONLY = (sqlite3.IntegrityError, pg.Error)


# ---- the chain ------------------------------------------------------------------------------------------------


def test_entry_hash_is_sha256_of_documented_material():
    payload = canonical({"b": 1, "a": [1, "x"]})
    assert payload == '{"a":[1,"x"],"b":1}'
    material = f"{GENESIS}|1|{1700000000.25!r}|kind|{payload}".encode()
    assert entry_hash(GENESIS, 1, 1700000000.25, "kind", payload) == hashlib.sha256(material).hexdigest()


def _chain(n: int) -> list[AuditEntry]:
    out, prev = [], GENESIS
    for seq in range(1, n + 1):
        body = canonical({"i": seq})
        h = entry_hash(prev, seq, 1000.0 + seq, "k", body)
        out.append(AuditEntry(seq, 1000.0 + seq, "k", body, prev, h))
        prev = h
    return out


def test_verify_pure_chain():
    chain = _chain(6)
    assert verify(chain).ok and verify(chain).entries == 6
    assert verify([]).ok
    edited = list(chain)
    e = edited[3]
    edited[3] = AuditEntry(e.seq, e.ts, e.kind, canonical({"i": 999}), e.prev_hash, e.hash)
    r = verify(edited)
    assert (r.ok, r.first_bad_seq) == (False, 4) and "hash" in r.reason
    # Re-hashing the edited entry breaks the link of the next one.
    e = edited[3]
    edited[3] = AuditEntry(e.seq, e.ts, e.kind, e.payload, e.prev_hash,
                           entry_hash(e.prev_hash, e.seq, e.ts, e.kind, e.payload))
    r = verify(edited)
    assert (r.ok, r.first_bad_seq) == (False, 5) and "prev_hash" in r.reason
    # A deleted entry is a sequence gap; reordering too.
    r = verify(chain[:2] + chain[3:])
    assert (r.ok, r.first_bad_seq) == (False, 4) and "gap" in r.reason
    r = verify([chain[1], chain[0]] + chain[2:])
    assert (r.ok, r.first_bad_seq) == (False, 2)
    # A changed timestamp or kind is caught as well.
    e = chain[0]
    r = verify([AuditEntry(e.seq, e.ts + 1, e.kind, e.payload, e.prev_hash, e.hash)] + chain[1:])
    assert (r.ok, r.first_bad_seq) == (False, 1)
    r = verify(chain[:1] + [AuditEntry(2, chain[1].ts, "other", chain[1].payload, chain[1].prev_hash,
                                       chain[1].hash)] + chain[2:])
    assert (r.ok, r.first_bad_seq) == (False, 2)


async def test_ledger_audit_chain_verifies_and_matches_tables(populated: Path):
    entries = reports.audit_entries(populated)
    assert verify(entries).ok
    assert [e.seq for e in entries] == list(range(1, len(entries) + 1))
    kinds = [e.kind for e in entries]
    assert kinds.count("block_found") == 3 and kinds.count("block_status") == 4
    assert "payment_created" in kinds and "payment_sent" in kinds
    # Each block_found entry states exactly the credits and fee the tables hold.
    conn = _open(populated)
    try:
        for e in entries:
            if e.kind != "block_found":
                continue
            p = json.loads(e.payload)
            rows = conn.execute("SELECT address, worker, amount FROM credits WHERE block_hash=? ORDER BY address,"
                                " worker", (p["block_hash"],)).fetchall()
            assert [tuple(c) for c in p["credits"]] == rows
            assert conn.execute("SELECT fee, reward FROM blocks WHERE block_hash=?", (p["block_hash"],)).fetchone() \
                == (p["fee"], p["reward"])
    finally:
        conn.close()


async def test_audit_log_is_append_only(populated: Path):
    conn = _open(populated)
    try:
        with pytest.raises(APPEND_ONLY, match="append-only"):
            conn.execute("UPDATE audit SET payload='{}' WHERE seq=2")
        with pytest.raises(APPEND_ONLY, match="append-only"):
            conn.execute("DELETE FROM audit WHERE seq=2")
        with pytest.raises(APPEND_ONLY, match="append-only"):
            conn.execute("DELETE FROM audit")
        # Appending is allowed (that is how the log grows).
        n = conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
        book.audit(conn, "note", {"x": 1})
        conn.execute("COMMIT")
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == n + 1
    finally:
        conn.close()
    assert reports.audit_verify(populated)[0]


@pytest.mark.parametrize("seq", [1, 5, "last"])
async def test_verify_detects_tampered_payload(populated: Path, copy_ledger, seq):
    bad = copy_ledger(populated, "tampered.sqlite3")
    conn = _unlocked(bad)
    try:
        if seq == "last":
            seq = conn.execute("SELECT MAX(seq) FROM audit").fetchone()[0]
        payload = json.loads(conn.execute("SELECT payload FROM audit WHERE seq=?", (seq,)).fetchone()[0])
        payload["tampered"] = True
        conn.execute("UPDATE audit SET payload=? WHERE seq=?", (canonical(payload), seq))
    finally:
        conn.close()
    ok, message = reports.audit_verify(bad)
    assert not ok and f"entry {seq}:" in message
    res = run_cli("audit", "verify", "--ledger", str(bad))
    assert res.returncode == 1 and f"entry {seq}:" in res.stdout, res.stdout + res.stderr
    # The original is untouched.
    res = run_cli("audit", "verify", "--ledger", str(populated))
    assert res.returncode == 0 and "OK" in res.stdout, res.stdout + res.stderr


async def test_verify_detects_rehashed_entry_and_deletion(populated: Path, copy_ledger):
    bad = copy_ledger(populated, "rehashed.sqlite3")
    conn = _unlocked(bad)
    try:
        seq, ts, kind, payload, prev = conn.execute(
            "SELECT seq, ts, kind, payload, prev_hash FROM audit WHERE kind='block_found' LIMIT 1").fetchone()
        p = json.loads(payload)
        p["credits"][0][2] += 1000  # give someone 1000 sat more, and fix up this entry's own hash
        body = canonical(p)
        conn.execute("UPDATE audit SET payload=?, hash=? WHERE seq=?", (body, entry_hash(prev, seq, ts, kind, body), seq))
    finally:
        conn.close()
    r = verify(reports.audit_entries(bad))
    assert (r.ok, r.first_bad_seq) == (False, seq + 1)

    gone = copy_ledger(populated, "deleted.sqlite3")
    conn = _unlocked(gone)
    try:
        conn.execute("DELETE FROM audit WHERE seq=3")
    finally:
        conn.close()
    r = verify(reports.audit_entries(gone))
    assert (r.ok, r.first_bad_seq) == (False, 4)
    assert run_cli("audit", "verify", "--ledger", str(gone)).returncode == 1


async def test_verify_detects_credits_that_do_not_balance(populated: Path, copy_ledger):
    bad = copy_ledger(populated, "credits.sqlite3")
    conn = _open(bad)
    try:
        conn.execute("UPDATE credits SET amount = amount + 1 WHERE id = (SELECT MIN(id) FROM credits)")
    finally:
        conn.close()
    ok, message = reports.audit_verify(bad)
    assert not ok and "!= reward" in message
    assert run_cli("audit", "verify", "--ledger", str(bad)).returncode == 1


async def test_audit_export_csv_and_json(populated: Path):
    entries = reports.audit_entries(populated)
    res = run_cli("audit", "export", "--format", "json", "--ledger", str(populated))
    assert res.returncode == 0, res.stderr
    exported = json.loads(res.stdout)
    assert [e["seq"] for e in exported] == [e.seq for e in entries]
    for got, e in zip(exported, entries, strict=True):
        assert got["payload"] == json.loads(e.payload) and got["hash"] == e.hash and got["ts"] == e.ts
        # An auditor can recompute every hash from the export alone.
        assert entry_hash(got["prev_hash"], got["seq"], got["ts"], got["kind"], canonical(got["payload"])) == got["hash"]
    assert json.loads(run_cli("audit", "export", "--json", "--ledger", str(populated)).stdout) == exported

    res = run_cli("audit", "export", "--format", "csv", "--ledger", str(populated))
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == len(entries)
    rebuilt = [AuditEntry(int(r["seq"]), float(r["ts"]), r["kind"], r["payload"], r["prev_hash"], r["hash"])
               for r in rows]
    assert rebuilt == entries
    assert verify(rebuilt).ok
    # Default format is CSV.
    assert run_cli("audit", "export", "--ledger", str(populated)).stdout == res.stdout


def test_audit_cli_on_missing_ledger(tmp_path: Path):
    res = run_cli("audit", "verify", "--ledger", str(tmp_path / "nope.sqlite3"))
    assert res.returncode == 1 and "no ledger" in res.stderr
