"""Operator reports read from the ledger: workers, blocks, payouts, and the audit log (verify, export).

Plain read-only queries, so they work on a live pool's ledger (SQLite WAL readers and PostgreSQL readers never
block the writer) and on a copy handed to an auditor. ``source`` is a SQLite path, a ``postgresql://`` URL or a
``pg.PgTarget`` (URL and password).
"""

from __future__ import annotations

import csv
import io
import json
from contextlib import closing
from typing import Any

from pool.ledger import dialect
from pool.ledger.book import AuditEntry, read_audit, verify
from pool.ledger.pg import LedgerSource, open_reader
from pool.ledger.rollup import totals_sql as share_totals_sql

Table = tuple[list[str], list[tuple[Any, ...]]]


def _connect(path: LedgerSource) -> Any:
    return open_reader(path)


def workers(path: LedgerSource) -> Table:
    """Per worker: shares and difficulty (rolled-up hours plus the rows still kept), blocks and credits."""
    with closing(_connect(path)) as conn:
        rows = conn.execute(
            f"SELECT s.address, s.worker, s.shares, s.difficulty, {dialect.of(conn).datetime('s.last_ts')},"
            " (SELECT COUNT(*) FROM blocks b WHERE b.address = s.address AND b.worker = s.worker),"
            " COALESCE((SELECT SUM(amount) FROM credits c WHERE c.address = s.address AND c.worker = s.worker"
            "   AND c.status IN ('payable', 'onchain')), 0),"
            " COALESCE((SELECT SUM(amount) FROM credits c WHERE c.address = s.address AND c.worker = s.worker"
            "   AND c.status = 'pending'), 0)"
            f" FROM ({share_totals_sql(conn)}) s ORDER BY s.address, s.worker"
        ).fetchall()
    return ["address", "worker", "shares", "difficulty", "last_share", "blocks", "credited_sats", "pending_sats"], rows


def blocks(path: LedgerSource) -> Table:
    with closing(_connect(path)) as conn:
        rows = conn.execute(
            "SELECT height, block_hash, address || CASE WHEN worker != '' THEN '.' || worker ELSE '' END,"
            f" reward, fee, scheme, status, confirmations, {dialect.of(conn).datetime('found_at')}"
            " FROM blocks ORDER BY height DESC, found_at DESC"
        ).fetchall()
    return ["height", "hash", "finder", "reward_sats", "fee_sats", "scheme", "status", "confirmations", "found"], rows


def payouts(path: LedgerSource, by: str = "address") -> Table:
    """Credits, payments and balance per payout address (or per worker)."""
    with closing(_connect(path)) as conn:
        if by == "worker":
            rows = conn.execute(
                "SELECT address, worker,"
                " SUM(CASE WHEN status='pending' THEN amount ELSE 0 END),"
                " SUM(CASE WHEN status='payable' THEN amount ELSE 0 END),"
                " SUM(CASE WHEN status='onchain' THEN amount ELSE 0 END),"
                " SUM(CASE WHEN status='void' THEN amount ELSE 0 END)"
                " FROM credits GROUP BY address, worker ORDER BY address, worker"
            ).fetchall()
            return ["address", "worker", "pending_sats", "payable_sats", "paid_in_coinbase_sats", "void_sats"], rows
        rows = conn.execute(
            "WITH c AS (SELECT address,"
            "   SUM(CASE WHEN status='pending' THEN amount ELSE 0 END) AS pending,"
            "   SUM(CASE WHEN status='payable' THEN amount ELSE 0 END) AS payable,"
            "   SUM(CASE WHEN status='onchain' THEN amount ELSE 0 END) AS onchain"
            "   FROM credits GROUP BY address),"
            " p AS (SELECT address, SUM(CASE WHEN status='sent' THEN amount ELSE 0 END) AS sent,"
            "   SUM(CASE WHEN status='sending' THEN amount ELSE 0 END) AS sending FROM payments GROUP BY address),"
            " a AS (SELECT address FROM c UNION SELECT address FROM p)"
            " SELECT a.address, COALESCE(pending,0), COALESCE(payable,0), COALESCE(sent,0), COALESCE(sending,0),"
            "   COALESCE(payable,0) - COALESCE(sent,0) - COALESCE(sending,0), COALESCE(onchain,0)"
            " FROM a LEFT JOIN c ON c.address = a.address LEFT JOIN p ON p.address = a.address ORDER BY a.address"
        ).fetchall()
    return ["address", "pending_sats", "credited_sats", "paid_sats", "sending_sats", "balance_sats",
            "paid_in_coinbase_sats"], rows


def audit_entries(path: LedgerSource) -> list[AuditEntry]:
    with closing(_connect(path)) as conn:
        return read_audit(conn)


def audit_verify(path: LedgerSource) -> tuple[bool, str]:
    """Check the hash chain and that every block's credits plus fee equal its reward."""
    result = verify(audit_entries(path))
    if not result.ok:
        return False, f"audit log broken at entry {result.first_bad_seq}: {result.reason}"
    with closing(_connect(path)) as conn:
        bad = conn.execute(
            "SELECT b.block_hash, b.reward, b.fee, COALESCE(SUM(c.amount), 0) FROM blocks b"
            " LEFT JOIN credits c ON c.block_hash = b.block_hash GROUP BY b.block_hash"
            " HAVING b.reward != b.fee + COALESCE(SUM(c.amount), 0)"
        ).fetchall()
    if bad:
        return False, f"block {bad[0][0]}: credits {bad[0][3]} + fee {bad[0][2]} != reward {bad[0][1]}"
    return True, f"audit log OK: {result.entries} entries, chain intact, every block balances"


def audit_export(path: LedgerSource, fmt: str) -> str:
    entries = audit_entries(path)
    if fmt == "json":
        return json.dumps(
            [{"seq": e.seq, "ts": e.ts, "kind": e.kind, "payload": json.loads(e.payload), "prev_hash": e.prev_hash,
              "hash": e.hash} for e in entries],
            indent=2,
        )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seq", "ts", "kind", "payload", "prev_hash", "hash"])
    for e in entries:
        writer.writerow([e.seq, repr(e.ts), e.kind, e.payload, e.prev_hash, e.hash])
    return out.getvalue()


def render(table: Table, as_json: bool) -> str:
    header, rows = table
    if as_json:
        return json.dumps([dict(zip(header, row, strict=True)) for row in rows], indent=2)
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if not rows:
        lines.append("(none)")
    return "\n".join(lines)
