"""The ledger's schema, versioned, set up at start on SQLite and PostgreSQL alike.

``book.SCHEMA`` and ``best.SCHEMA`` (every ``CREATE ... IF NOT EXISTS``, written once in the SQLite flavour that ``dialect.ddl``
translates) is applied at every start, so a new table simply appears. A change that ``IF NOT EXISTS`` cannot
express (a new column, a backfill) is a numbered step in ``MIGRATIONS``; ``schema_version`` records the last
step applied. A ledger written by a newer pool (its version above ``VERSION``) is refused before anything is
touched: an older pool would otherwise write rows the newer one does not expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pool.ledger import best, book, dialect

VERSION = 1


class SchemaError(RuntimeError):
    """The ledger cannot be used by this pool (e.g. a newer schema)."""


# Step n brings version n-1 to n. Version 1 is the first versioned schema; the SQLite columns added before
# versioning existed (``book.migrate``) are brought up to date on the way to it.
MIGRATIONS: dict[int, Callable[[Any], None]] = {}

PG_AUDIT_GUARD = """
CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN RAISE EXCEPTION 'audit log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_no_update BEFORE UPDATE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE OR REPLACE TRIGGER audit_no_delete BEFORE DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
"""

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


def stored_version(conn: Any) -> int | None:
    """The version recorded in the ledger; None for an empty database or a ledger from before versioning."""
    d = dialect.of(conn)
    if conn.execute(d.table_exists_sql(), ("schema_version",)).fetchone() is None:
        return None
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def check(conn: Any, where: str) -> int | None:
    version = stored_version(conn)
    if version is not None and version > VERSION:
        raise SchemaError(f"the ledger at {where} has schema version {version}, newer than this pool's {VERSION}:"
                          " run the newer pool version (this one would write rows it does not understand)")
    return version


def prepare(conn: Any, where: str) -> int:
    """Create or upgrade the schema on ``conn`` (in one transaction on PostgreSQL); returns the version."""
    d = dialect.of(conn)
    if d.is_pg:
        conn.execute("BEGIN IMMEDIATE")  # one process at a time, with the write lock
        try:
            version = check(conn, where)
            conn.executescript(dialect.ddl(book.SCHEMA + best.SCHEMA, d) + PG_AUDIT_GUARD
                               + dialect.ddl(VERSION_TABLE, d))
            _upgrade(conn, version)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return VERSION
    version = check(conn, where)
    conn.executescript(book.SCHEMA)
    conn.executescript(best.SCHEMA)
    book.migrate(conn)  # idempotent column additions from before versioning (their own short transactions)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(VERSION_TABLE)
        _upgrade(conn, check(conn, where))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return VERSION


def _upgrade(conn: Any, version: int | None) -> None:
    start = 1 if version is None else version
    for step in range(start + 1, VERSION + 1):
        MIGRATIONS[step](conn)
    if version != VERSION:
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (VERSION,))
