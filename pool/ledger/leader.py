"""Exactly one pool process runs maturity and payments for a ledger: whoever holds the leader lock.

Why: several pool nodes may share one PostgreSQL ledger. Each records shares and blocks, but block maturity
and wallet payments must run in one place, or two nodes would race to pay the same balances. The lock is a
PostgreSQL session advisory lock (``pg_try_advisory_lock``) held on a connection of its own: it lives exactly
as long as that session. A node killed with ``kill -9`` closes its socket and the server drops the lock at
once; a host that vanishes is noticed by TCP keepalives (``pg.SERVER_KEEPALIVE``, about 11 s). The others
try again every ``retry`` seconds, so one of them takes over within keepalive + retry seconds. The holder
checks its session every ``check`` seconds and stops its maturity and payment loops as soon as it is gone.

Payments stay single even across a takeover: ``book.create_payments`` refuses to start a batch while another
is ``sending`` (checked under the ledger's write lock), and the new leader settles such a batch by the
existing reconciliation against the wallet.

On SQLite the lock is an exclusive ``flock`` on ``<ledger>.leader`` beside the file (several processes on one
host may share a SQLite ledger); the kernel drops it when the process dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from pool.ledger import pg

log = structlog.get_logger("pool.ledger.leader")


class LeaderLock(Protocol):
    def try_acquire(self) -> bool: ...

    def still_held(self) -> bool: ...

    def release(self) -> None: ...


class PgLeaderLock:
    """``pg_try_advisory_lock`` on a dedicated connection."""

    def __init__(self, url: str, password: str | None, key: int = pg.LEADER_LOCK) -> None:
        self._url = url
        self._password = password
        self._key = key
        self._conn: pg.PgConnection | None = None

    def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.broken:
                self._conn = pg.connect(self._url, self._password, timeout=5, application_name="pool-leader")
            row = self._conn.execute("SELECT pg_try_advisory_lock(?)", (self._key,)).fetchone()
        except pg.Error as exc:
            log.warning("leader_lock_unavailable", database=pg.redact(self._url), error=str(exc))
            self.release()
            return False
        return bool(row and row[0])

    def still_held(self) -> bool:
        """The session is alive (a session lock cannot be lost any other way)."""
        if self._conn is None or self._conn.broken:
            return False
        try:
            self._conn.execute("SELECT 1")
            return True
        except pg.Error:
            return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()  # ends the session, and with it the lock
            self._conn = None


class FileLeaderLock:
    """An exclusive ``flock`` on a file beside the SQLite ledger."""

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def still_held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_for(source: Any) -> LeaderLock:
    """The leader lock of a ledger source (a SQLite path or a ``pg.PgTarget``)."""
    if isinstance(source, pg.PgTarget):
        return PgLeaderLock(source.url, source.password)
    return FileLeaderLock(Path(str(source) + ".leader"))


class Leadership:
    """Holds (or keeps trying for) the leader lock and runs work only while holding it."""

    def __init__(self, lock: LeaderLock, retry: float = 2.0, check: float = 2.0,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self._lock = lock
        self._retry = retry
        self._check = check
        self._on_change = on_change
        self.leading = False
        self._changed = asyncio.Event()

    def _set(self, leading: bool, stopping: bool = False) -> None:
        if leading != self.leading:
            self.leading = leading
            self._changed.set()
            self._changed = asyncio.Event()
            if stopping:  # a normal stop hands the role over: nothing for an operator to look at
                log.info("leader_released")
            else:
                log.warning("leader_elected" if leading else "leader_lost")
            if self._on_change is not None:
                with contextlib.suppress(Exception):
                    self._on_change(leading)

    async def _until(self, leading: bool) -> None:
        while self.leading != leading:
            await self._changed.wait()

    async def run(self) -> None:
        """Acquire, hold, re-acquire, forever (a supervised task); the lock is released when cancelled."""
        try:
            while True:
                if await asyncio.to_thread(self._lock.try_acquire):
                    self._set(True)
                    while await asyncio.to_thread(self._lock.still_held):
                        await asyncio.sleep(self._check)
                    self._set(False)
                    await asyncio.to_thread(self._lock.release)
                await asyncio.sleep(self._retry)
        finally:
            self._set(False, stopping=True)
            self._lock.release()

    def gated(self, work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """``work`` run only while leading: started when elected, cancelled when the lock is lost. An error
        of ``work`` itself propagates (for the supervisor to count and restart)."""

        async def run() -> None:
            while True:
                await self._until(True)
                task = asyncio.ensure_future(work())
                lost = asyncio.ensure_future(self._until(False))
                try:
                    await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not task.done():
                        task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if not self.leading and task.cancelled():
                    continue
                task.result()  # work ended by itself: its error (or its return) goes to the supervisor
                return

        return run
