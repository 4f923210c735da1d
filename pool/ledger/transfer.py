"""``pool ledger migrate``: copy a SQLite ledger into an empty PostgreSQL database, then prove the copy.

Every table of the source is copied as it is (rows, ids, the audit log byte for byte) with ``COPY``, in one
transaction under the ledger's write lock, into a database whose schema the pool has just created; then the
identity sequences continue after the copied ids. Proof, read back from PostgreSQL afterwards: the audit
chain verifies from the first entry, its length and last hash equal the source's, every table has the
source's row count, and every block's credits plus fee equal its reward (as ``pool audit verify``).

The source is first opened as the pool would open it (brought up to the current schema, which is what the
pool itself does at start), and must not be written meanwhile: stop the pool first.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from pool.ledger import book, pg, schema
from pool.ledger.sqlite import Ledger

CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class MigrationResult:
    ok: bool
    message: str
    rows: dict[str, int]


class MigrationError(RuntimeError):
    """The copy could not be made (source missing, target not empty, newer schema)."""


def _source_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                        " AND name != 'schema_version' ORDER BY name").fetchall()
    return [r[0] for r in rows]


def _columns_sqlite(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _columns_pg(conn: pg.PgConnection, table: str) -> list[str]:
    rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
                        " AND table_name = ? ORDER BY ordinal_position", (table,)).fetchall()
    return [r[0] for r in rows]


def migrate_sqlite_to_pg(source: Path, target: pg.PgTarget, chunk: int = CHUNK) -> MigrationResult:
    source = Path(source)
    if not source.exists():
        raise MigrationError(f"no SQLite ledger at {source}")
    Ledger(source, rollup_interval=0).close()  # up to the current schema (refuses a newer one)
    Ledger(target, rollup_interval=0).close()  # the schema on the PostgreSQL side
    where = pg.redact(target.url)
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, \
            closing(pg.connect(target.url, target.password, application_name="pool-migrate")) as dst:
        tables = _source_tables(src)
        for table in tables:
            if not _columns_pg(dst, table):
                raise MigrationError(f"table {table} of {source} has no counterpart in {where}")
            if dst.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchone() is not None:
                raise MigrationError(f"{where} already holds ledger rows (table {table}): migrate into an empty"
                                     " database")
        counts: dict[str, int] = {}
        dst.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                target_columns = set(_columns_pg(dst, table))
                columns = [c for c in _columns_sqlite(src, table) if c in target_columns]
                names = ", ".join(columns)
                counts[table] = 0
                rows = src.execute(f"SELECT {names} FROM {table}")
                with dst.raw.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:  # type: ignore[arg-type]
                    while batch := rows.fetchmany(chunk):
                        for row in batch:
                            copy.write_row(row)
                        counts[table] += len(batch)
            _restart_identities(dst)
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        dst.execute("COMMIT")
        return _verify(src, target, tables, counts)


def _restart_identities(dst: pg.PgConnection) -> None:
    """Identity columns continue after the largest copied value (the next share gets the next id)."""
    rows = dst.execute("SELECT table_name, column_name FROM information_schema.columns"
                       " WHERE table_schema = current_schema() AND is_identity = 'YES'").fetchall()
    for table, column in rows:
        dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                    f" COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)")


def _verify(src: sqlite3.Connection, target: pg.PgTarget, tables: list[str], counts: dict[str, int]
            ) -> MigrationResult:
    from pool import reports

    where = pg.redact(target.url)
    source_audit = book.read_audit(src)
    with closing(pg.connect(target.url, target.password, read_only=True, application_name="pool-migrate")) as dst:
        for table in tables:
            have = dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            want = src.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if have != want:
                return MigrationResult(False, f"table {table}: {have} rows in {where}, {want} in the source", counts)
        copied = book.read_audit(dst)
    result = book.verify(copied)
    if not result.ok:
        return MigrationResult(False, f"audit chain in {where} broken at entry {result.first_bad_seq}:"
                               f" {result.reason}", counts)
    if len(copied) != len(source_audit) or (copied and copied[-1].hash != source_audit[-1].hash):
        return MigrationResult(False, f"audit log in {where} differs from the source's ({len(copied)} entries vs"
                               f" {len(source_audit)})", counts)
    ok, message = reports.audit_verify(target)
    if not ok:
        return MigrationResult(False, f"{where}: {message}", counts)
    summary = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
    return MigrationResult(True, f"copied to {where} ({summary}); schema version {schema.VERSION}; {message}",
                           counts)
