"""Operator reports read from the ledger: workers, blocks, payouts, the audit log (verify, export), and the
regulator's report (``pool report``: blocks, rewards, credits, payments, operators, energy per site).

Plain read-only queries, so they work on a live pool's ledger (SQLite WAL readers and PostgreSQL readers never
block the writer) and on a copy handed to an auditor. ``source`` is a SQLite path, a ``postgresql://`` URL or a
``pg.PgTarget`` (URL and password).
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from pool.ledger import dialect
from pool.ledger.book import GENESIS, AuditEntry, read_audit, verify
from pool.ledger.pg import LedgerSource, describe, open_reader
from pool.ledger.rollup import totals_sql as share_totals_sql
from pool.mining.allowlist import Allowlist

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


def audit_verify(path: LedgerSource, head: str | None = None) -> tuple[bool, str]:
    """Check the hash chain and that every block's credits plus fee equal its reward; with ``head`` (a report's
    ``audit_head_hash``) also that the chain still contains that entry, i.e. the report's ledger state is a
    prefix of this one."""
    entries = audit_entries(path)
    result = verify(entries)
    if not result.ok:
        return False, f"audit log broken at entry {result.first_bad_seq}: {result.reason}"
    at = ""
    if head is not None:
        head = head.strip().lower()
        match = next((e for e in entries if e.hash == head), None) if head != GENESIS else None
        if match is None and head != GENESIS:
            return False, f"audit head {head} is not in this ledger's chain ({result.entries} entries)"
        seq = match.seq if match is not None else 0
        at = f"; head {head[:16]}... is entry {seq}, {result.entries - seq} entries after it"
    with closing(_connect(path)) as conn:
        bad = conn.execute(
            "SELECT b.block_hash, b.reward, b.fee, COALESCE(SUM(c.amount), 0) FROM blocks b"
            " LEFT JOIN credits c ON c.block_hash = b.block_hash GROUP BY b.block_hash"
            " HAVING b.reward != b.fee + COALESCE(SUM(c.amount), 0)"
        ).fetchall()
    if bad:
        return False, f"block {bad[0][0]}: credits {bad[0][3]} + fee {bad[0][2]} != reward {bad[0][1]}"
    return True, f"audit log OK: {result.entries} entries, chain intact, every block balances{at}"


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


# ---- the regulator's report (``pool report``) -------------------------------------------------------------------

HASHES_PER_DIFF1 = 2**32
JOULES_PER_KWH = 3.6e6
UNASSIGNED = "unassigned"


@dataclass(frozen=True, slots=True)
class Period:
    """``[start, end)`` in Unix seconds (UTC)."""

    start: float
    end: float


def parse_period(date_from: str, date_to: str) -> Period:
    """``--from``/``--to``: a date (``2026-11-01``: whole UTC days, ``--to`` inclusive) or an ISO date-time
    (exact; ``--to`` exclusive; without an offset it is UTC). ValueError with a message otherwise."""
    def one(text: str, end: bool) -> float:
        text = text.strip()
        try:
            if len(text) == 10:
                day = datetime.date.fromisoformat(text)
                moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
                return (moment + datetime.timedelta(days=1 if end else 0)).timestamp()
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()

    period = Period(one(date_from, False), one(date_to, True))
    if period.end <= period.start:
        raise ValueError("--to must be after --from")
    return period


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def energy_kwh(accepted_difficulty: float, efficiency_j_per_th: float) -> float:
    """Energy to do the accepted work: difficulty × 2^32 hashes, at ``efficiency`` joules per 10^12 hashes."""
    return accepted_difficulty * HASHES_PER_DIFF1 / 1e12 * efficiency_j_per_th / JOULES_PER_KWH


def regulator_report(path: LedgerSource, period: Period, allowlist: Allowlist | None = None,
                     fleet_efficiency: float = 30.0, site_efficiency: dict[str, float] | None = None,
                     site: str | None = None) -> dict[str, Any]:
    """Blocks and rewards, credits and payments (txids) per address and operator, and an energy estimate per
    site, for ``period``; all read in one snapshot of the ledger together with the audit chain's head, so the
    report can be checked later against the chain (``pool audit verify --head HASH``).

    Operators and sites come from the allowlist (``authorization.allowlist_file``); an address not on it is
    reported under operator ``""`` and site ``unassigned``. Energy per site = accepted difficulty × 2^32 hashes
    × the site's J/TH (``site_efficiency``, else ``fleet_efficiency``). ``site`` keeps only that site's addresses.
    """
    if site is not None and (allowlist is None or site not in allowlist.sites() | {UNASSIGNED}):
        known = ", ".join(sorted(allowlist.sites())) if allowlist is not None else ""
        raise ValueError(f"unknown site {site!r}: sites come from the allowlist file's third column"
                         + (f" (known: {known})" if known else " (no allowlist file is configured)"))
    site_efficiency = site_efficiency or {}
    licence_cache: dict[str, tuple[str, str]] = {}

    def who(address: str) -> tuple[str, str]:
        if address not in licence_cache:
            licence = allowlist.lookup(address) if allowlist is not None else None
            licence_cache[address] = (licence.operator, licence.site or UNASSIGNED) if licence else ("", UNASSIGNED)
        return licence_cache[address]

    def wanted(address: str) -> bool:
        return site is None or who(address)[1] == site

    span = (period.start, period.end)
    with closing(_connect(path)) as conn:
        d = dialect.of(conn)
        if d.is_pg:  # one snapshot: the figures and the audit head agree
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            conn.isolation_level = None
            conn.execute("BEGIN")
        head = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        work: dict[str, list[float]] = {}
        parts = ["SELECT address, COUNT(*), SUM(difficulty) FROM shares WHERE ts >= ? AND ts < ? GROUP BY address"]
        params: list[float] = [*span]
        if conn.execute(d.table_exists_sql(), ("share_rollup",)).fetchone():
            parts.append("SELECT address, SUM(shares), SUM(difficulty) FROM share_rollup"
                         " WHERE hour * 3600 >= ? AND hour * 3600 < ? GROUP BY address")
            params += span
        for address, count, difficulty in conn.execute(" UNION ALL ".join(parts), params):
            totals = work.setdefault(address, [0, 0.0])
            totals[0] += count
            totals[1] += difficulty or 0.0
        blocks_rows = conn.execute(
            "SELECT height, block_hash, found_at, address, worker, reward, fee, status FROM blocks"
            " WHERE found_at >= ? AND found_at < ? ORDER BY found_at, height", span).fetchall()
        credit_rows = conn.execute(
            "SELECT address, status, SUM(amount) FROM credits WHERE created_at >= ? AND created_at < ?"
            " GROUP BY address, status", span).fetchall()
        payment_rows = conn.execute(
            "SELECT created_at, address, amount, status, txid, batch FROM payments"
            " WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id", span).fetchall()
        conn.execute("COMMIT")

    addresses: dict[str, dict[str, Any]] = {}

    def row_for(address: str) -> dict[str, Any]:
        if address not in addresses:
            operator, where = who(address)
            addresses[address] = {"address": address, "operator": operator, "site": where, "shares": 0,
                                  "accepted_difficulty": 0.0, "blocks_found": 0, "rewards_sats": 0,
                                  "credited_sats": 0, "paid_in_coinbase_sats": 0, "void_sats": 0, "paid_sats": 0,
                                  "txids": []}
        return addresses[address]

    for address, (count, difficulty) in work.items():
        if wanted(address):
            row = row_for(address)
            row["shares"], row["accepted_difficulty"] = int(count), float(difficulty)
    blocks = []
    for height, block_hash, found_at, address, worker, reward, fee, status in blocks_rows:
        if not wanted(address):
            continue
        operator, where = who(address)
        blocks.append({"height": height, "hash": block_hash, "found_at": _iso(found_at), "finder_address": address,
                       "finder_worker": worker, "operator": operator, "site": where, "reward_sats": reward,
                       "fee_sats": fee, "status": status})
        row = row_for(address)
        row["blocks_found"] += 1
        row["rewards_sats"] += int(reward)
    for address, status, amount in credit_rows:
        if not wanted(address):
            continue
        row = row_for(address)
        if status == "void":
            row["void_sats"] += int(amount)
        else:
            row["credited_sats"] += int(amount)
            if status == "onchain":
                row["paid_in_coinbase_sats"] += int(amount)
    payments = []
    for created_at, address, amount, status, txid, batch in payment_rows:
        if not wanted(address):
            continue
        payments.append({"created_at": _iso(created_at), "address": address, "operator": who(address)[0],
                         "amount_sats": amount, "status": status, "txid": txid, "batch": batch})
        if status == "sent":
            row = row_for(address)
            row["paid_sats"] += int(amount)
            if txid and txid not in row["txids"]:
                row["txids"].append(txid)

    operators: dict[str, dict[str, Any]] = {}
    energy: dict[str, dict[str, Any]] = {}
    for row in addresses.values():
        op = operators.setdefault(row["operator"], {"operator": row["operator"], "addresses": 0, "shares": 0,
                                                    "accepted_difficulty": 0.0, "blocks_found": 0,
                                                    "credited_sats": 0, "paid_sats": 0})
        op["addresses"] += 1
        for key in ("shares", "accepted_difficulty", "blocks_found", "credited_sats", "paid_sats"):
            op[key] += row[key]
        efficiency = site_efficiency.get(row["site"], fleet_efficiency)
        e = energy.setdefault(row["site"], {"site": row["site"], "efficiency_j_per_th": efficiency, "addresses": 0,
                                            "accepted_difficulty": 0.0, "hashes": 0.0, "energy_kwh": 0.0})
        e["addresses"] += 1
        e["accepted_difficulty"] += row["accepted_difficulty"]
        e["hashes"] = e["accepted_difficulty"] * HASHES_PER_DIFF1
        e["energy_kwh"] = energy_kwh(e["accepted_difficulty"], efficiency)
    for row in addresses.values():
        row["txids"] = " ".join(row["txids"])
    return {
        "report": {
            "from": _iso(period.start), "to": _iso(period.end), "site": site, "ledger": describe(path),
            "generated_at": _iso(time.time()),
            "audit_head_seq": head[0] if head else 0, "audit_head_hash": head[1] if head else GENESIS,
            "allowlist_sha256": allowlist.digest if allowlist is not None else None,
            "energy_basis": "accepted difficulty x 2^32 hashes x J/TH of the site (else the fleet efficiency)",
            "fleet_efficiency_j_per_th": fleet_efficiency,
        },
        "blocks": blocks,
        "addresses": sorted(addresses.values(), key=lambda r: (r["operator"], r["address"])),
        "operators": sorted(operators.values(), key=lambda r: r["operator"]),
        "payments": payments,
        "energy": sorted(energy.values(), key=lambda r: r["site"]),
    }


REPORT_SECTIONS = ("blocks", "addresses", "operators", "payments", "energy")


def render_report(report: dict[str, Any], fmt: str) -> str:
    """JSON as is; CSV as sections (``# name``, a header row, rows) separated by blank lines, the report's
    metadata first as key,value rows."""
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    out.write("# report\n")
    writer.writerow(["key", "value"])
    for key, value in report["report"].items():
        writer.writerow([key, "" if value is None else value])
    for name in REPORT_SECTIONS:
        rows = report[name]
        out.write(f"\n# {name}\n")
        if rows:
            writer.writerow(list(rows[0]))
            for row in rows:
                writer.writerow(["" if v is None else v for v in row.values()])
        else:
            writer.writerow(["(none)"])
    return out.getvalue()
