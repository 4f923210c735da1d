"""PostgreSQL connections for the ledger, shaped like ``sqlite3`` connections so ``book.py`` runs on both.

``PgConnection.execute(sql, params)`` takes the SQLite-flavoured SQL (``?`` / ``:name`` placeholders, rewritten
by ``dialect.pg_placeholders``) and returns a cursor with ``fetchone``/``fetchall``/``rowcount``. The
connection is in autocommit mode, so transactions are the explicit ``BEGIN``/``COMMIT``/``SAVEPOINT`` the
ledger already issues. ``BEGIN IMMEDIATE`` (SQLite: take the write lock now) becomes ``BEGIN`` plus a
transaction-scoped advisory lock: every writing transaction of every pool process on this database runs one
at a time, as on SQLite. The running PPLNS totals and the audit chain (each row continues from the previous
one) need exactly that, and it also makes a found block's credits computed once whichever node records it.

The password never appears in a URL, a log line or an error: it comes from ``POOL_LEDGER_PASSWORD`` or a
file and is handed to libpq as a separate keyword; ``redact`` strips one from a URL anyway before display.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Loader

from pool.ledger.dialect import POSTGRES, pg_placeholders

PASSWORD_ENV = "POOL_LEDGER_PASSWORD"
# Advisory lock keys (64-bit, arbitrary but fixed): one database holds one pool's ledger.
WRITE_LOCK = 0x506F6F6C4C656401  # every writing transaction (the SQLite write lock's equivalent)
LEADER_LOCK = 0x506F6F6C4C656402  # the process that runs maturity and payments
# Server-side keepalives on the ledger's sessions: a pool host that vanishes without closing its socket
# (power loss, partition) releases its locks after about idle + interval × count seconds.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}
SERVER_KEEPALIVE = "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"

Error = psycopg.Error


def is_url(target: object) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    return re.sub(r"^(postgres(?:ql)?://[^:@/]*):[^@/]*@", r"\1:***@", url)


def has_password(url: str) -> bool:
    return redact(url) != url


def read_password(password_file: str | None = None, env: dict[str, str] | None = None) -> str | None:
    """From ``POOL_LEDGER_PASSWORD``, else the file (first line), else None (peer/trust auth or .pgpass)."""
    env = os.environ if env is None else env
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if password_file:
        return Path(password_file).read_text().splitlines()[0].strip() if Path(password_file).stat().st_size else ""
    return None


class _NumericAsNumber(Loader):
    """SUM over BIGINT is NUMERIC in PostgreSQL: satoshi sums come back as ``int`` (as from SQLite), not
    ``Decimal``; a numeric with a fraction (none in the ledger's queries) as ``float``."""

    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        try:
            return int(text)
        except ValueError:
            return float(text)


class PgCursor:
    __slots__ = ("_cur", "_owner")

    def __init__(self, cur: psycopg.Cursor[Any], owner: PgConnection) -> None:
        self._cur = cur
        self._owner = owner

    def fetchone(self) -> tuple[Any, ...] | None:
        try:  # in pipeline mode this waits for the statement's result (and raises its error)
            return self._cur.fetchone()
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate:  # the server's error (e.g. an unknown table), not "this statement has no rows"
                raise
            return None

    def fetchall(self) -> list[tuple[Any, ...]]:
        try:
            return self._cur.fetchall()
        except psycopg.ProgrammingError as exc:
            if exc.sqlstate:
                raise
            return []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        if self._owner.pipeline is not None:  # in pipeline mode the count is known once the results are in
            self._owner.pipeline.sync()
        return self._cur.rowcount

    @property
    def lastrowid(self) -> None:  # PostgreSQL has none: ledger SQL uses INSERT ... RETURNING
        return None


class PgConnection:
    """A psycopg connection speaking the ledger's SQLite-flavoured SQL."""

    dialect = POSTGRES

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.totals: list[Any] | None = None  # running totals of the current transaction (window.prefetch)
        self.share_ids: list[int] = []  # share ids drawn ahead for the current transaction (window.prefetch)
        self.pipeline: psycopg.Pipeline | None = None  # set while ``pipelined`` runs

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> PgCursor:
        head = sql.lstrip()[:16].upper()
        if head.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            self.totals = None  # valid inside one transaction only, and never across an undo
            self.share_ids = []
        if head.startswith("BEGIN IMMEDIATE"):
            self.raw.execute("BEGIN")
            self.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            return PgCursor(self.raw.cursor(), self)
        return PgCursor(self.raw.execute(pg_placeholders(sql), params or None), self)  # type: ignore[arg-type]

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(pg_placeholders(sql), seq)  # type: ignore[arg-type]

    def executescript(self, sql: str) -> None:
        """Statements without parameters, in one round trip (DDL)."""
        self.raw.execute(sql)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Statements are sent without waiting for each answer (a fetch or ``rowcount`` waits for its own);
        an error surfaces at the latest when the block ends."""
        with self.raw.pipeline() as pipeline:
            self.pipeline = pipeline
            try:
                yield
            finally:
                self.pipeline = None

    def take_share_id(self) -> int | None:
        """The next id drawn ahead for this transaction's shares, in order; None when none is left."""
        return self.share_ids.pop() if self.share_ids else None

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def close(self) -> None:
        self.raw.close()


def connect(url: str, password: str | None = None, *, timeout: float = 10.0, application_name: str = "pool",
            read_only: bool = False) -> PgConnection:
    """Open an autocommit connection (keepalives on both ends, so a dead peer is noticed in seconds)."""
    # Writers commit durably whatever the server's default: COMMIT returns once the WAL is flushed.
    options = SERVER_KEEPALIVE + (" -c default_transaction_read_only=on" if read_only else
                                  " -c synchronous_commit=on")
    kwargs: dict[str, Any] = dict(KEEPALIVE, connect_timeout=max(1, int(timeout)),
                                  application_name=application_name, options=options)
    if password is not None:
        kwargs["password"] = password
    try:
        raw = psycopg.connect(url, autocommit=True, **kwargs)
    except psycopg.Error as exc:  # libpq's message names host and user, never the password; the URL may hold one
        raise psycopg.OperationalError(redact(str(exc)).replace(url, redact(url))) from None
    raw.adapters.register_loader("numeric", _NumericAsNumber)
    return PgConnection(raw)


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A PostgreSQL ledger to open: its URL and password (kept out of ``repr`` and so out of logs)."""

    url: str
    password: str | None = field(default=None, repr=False)


LedgerSource = Path | str | PgTarget


def describe(source: LedgerSource) -> str:
    return redact(source.url) if isinstance(source, PgTarget) else redact(str(source))


def open_reader(source: LedgerSource) -> Any:
    """A read-only connection to a ledger: a SQLite file path, a ``postgresql://`` URL (password from
    ``POOL_LEDGER_PASSWORD``) or a ``PgTarget``. A missing SQLite file is ``FileNotFoundError``."""
    if isinstance(source, PgTarget):
        return connect(source.url, source.password, read_only=True, application_name="pool-report")
    if is_url(source):
        return connect(str(source), read_password(), read_only=True, application_name="pool-report")
    if not Path(source).exists():
        raise FileNotFoundError(f"no ledger at {source}")
    return sqlite3.connect(f"file:{source}?mode=ro", uri=True)


def connection_lost(exc: BaseException) -> bool:
    """The error means the session is gone (server restart, network), not that the SQL was wrong."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
