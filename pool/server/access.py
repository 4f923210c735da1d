"""Licensed operators at run time: who may authorize and mine, reloads of the allowlist, and drains.

The file's format and matching live in ``pool/mining/allowlist.py`` (pure); this module does the I/O around
them. In ``allowlist`` mode:

- ``mining.authorize`` for an address not on the list is refused with error 24 and a message saying why
  (counted in ``pool_authorize_refusals_total{reason="not-allowlisted"}``);
- a reload (SIGHUP, ``POST /admin/allowlist/reload``) parses the whole file first: a file with a bad line is
  refused, the list in force stays, and the error names each bad line;
- an address a reload removes stops earning at once (its shares get error 24) and its connections are
  closed at ``authorization.drain_rate`` per second (with ``client.show_message`` saying why), so removing a
  large operator does not make its whole fleet reconnect in the same second.

Every load, reload (with what was added and removed), refused reload and drain is written to the ledger's
hash-chained audit log, so a regulator can see who was licensed when.

With ``stratum.processes`` >= 2 the coordinator process reads the file, diffs and audits (once), and hands the
new list to every front-end (``spread``); each front-end has an ``AccessControl`` of its own that enforces it
at authorize and per share and drains its own sessions at ``drain_rate / processes`` (so the pool as a whole
closes ``drain_rate`` per second). A front-end's finished drain is reported back (``on_drain_done``) and the
coordinator writes one ``allowlist_drain_done`` entry when every front-end that had sessions to drain is done.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from pool.config import AuthorizationConfig, read_allowlist
from pool.mining.allowlist import Allowlist, AllowlistError, diff, removed_scripts
from pool.mining.workers import AuthError, Worker
from pool.ops.telemetry import Metrics
from pool.server.guard import TokenBucket

if TYPE_CHECKING:
    from pool.server.server import StratumServer
    from pool.server.session import Session

log = structlog.get_logger("pool.access")

AuditWriter = Callable[[str, dict[str, Any]], Awaitable[None]]
# Coordinator of front-end processes: (new list, scripts to drain) -> {process index: sessions queued to drain}
Spreader = Callable[[Allowlist, frozenset[bytes]], Awaitable[dict[int, int]]]
MAX_ADDRESSES_IN_AUDIT = 1000  # per entry; the counts are always complete
NOT_LICENSED = "Address {address} is not licensed to mine on this pool (not on the operator allowlist)"
DRAIN_MESSAGE = "This payout address is no longer licensed on this pool; disconnecting"


class ReloadRefused(Exception):
    """The allowlist file could not be read or has bad lines; the list in force is kept."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    entries: int
    added: int
    removed: int
    changed: int
    draining: int  # sessions queued to be closed
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "added": self.added, "removed": self.removed, "changed": self.changed,
                "draining": self.draining, "sha256": self.digest}


class AccessControl:
    """The allowlist in force, its reloads, and the paced drain of sessions whose address was removed."""

    def __init__(self, config: AuthorizationConfig, network: str, metrics: Metrics, audit: AuditWriter) -> None:
        self.config = config
        self.network = network
        self.metrics = metrics
        self._audit = audit
        self.allowlist: Allowlist = config.allowlist or Allowlist(network)
        self.enforced = config.enforced
        self.server: StratumServer | None = None
        self._draining: deque[Session] = deque()
        self._drain_pace = TokenBucket(config.drain_rate, max(1.0, config.drain_rate), time.monotonic())
        self._drained = 0
        self._drain_active = False  # a drain is queued: its end is reported (audited) once
        self._lock = asyncio.Lock()
        self._audits: set[asyncio.Future[None]] = set()
        self._refused_count = metrics.authorize_refusals.labels("not-allowlisted")
        self.spread: Spreader | None = None  # set in the coordinator of front-end processes
        self.on_drain_done: Callable[[int], None] | None = None  # set in a front-end process: report, not audit
        self._remote_draining: set[int] = set()  # front-ends still draining (coordinator)
        self._remote_closed = 0
        metrics.allowlist_entries.set(len(self.allowlist))

    # ---- the hot path ----------------------------------------------------------------------------------------

    def check(self, worker: Worker) -> None:
        """At ``mining.authorize``: raise AuthError (sent as error 24) unless the address may mine."""
        if self.enforced and worker.script not in self.allowlist.by_script:
            self._refused_count.inc()
            raise AuthError(NOT_LICENSED.format(address=worker.address[:100]))

    def may_mine(self, worker: Worker) -> bool:
        """Per share: an address removed by a reload earns nothing more, even before its connection closes."""
        return not self.enforced or worker.script in self.allowlist.by_script

    # ---- loading -----------------------------------------------------------------------------------------------

    async def announce(self) -> None:
        """At start: the list in force goes to the audit log (what was licensed from this moment)."""
        if not self.config.allowlist_file:
            return
        payload = {"mode": self.config.mode, "file": self.config.allowlist_file, "entries": len(self.allowlist),
                   "sha256": self.allowlist.digest}
        log.info("allowlist_loaded", **payload)
        await self._audit("allowlist_loaded", payload)

    async def reload(self, source: str) -> ReloadResult:
        """Re-read the file; swap it in whole or not at all. Raises ReloadRefused with the reason."""
        path = self.config.allowlist_file
        async with self._lock:  # a SIGHUP and an admin request at once: one after the other
            if not path:
                raise ReloadRefused("no allowlist file is configured (authorization.allowlist_file)")
            try:
                new = await asyncio.to_thread(read_allowlist, path, self.network)
            except (AllowlistError, OSError, UnicodeDecodeError) as exc:
                message = str(exc) if isinstance(exc, AllowlistError) else f"cannot read {path!r}: {exc}"
                self.metrics.allowlist_reloads.labels("refused").inc()
                log.error("allowlist_reload_refused", source=source, error=message, kept_entries=len(self.allowlist))
                await self._audit("allowlist_reload_refused", {"source": source, "file": path, "error": message[:2000],
                                                               "kept_sha256": self.allowlist.digest})
                raise ReloadRefused(message) from exc
            old, self.allowlist = self.allowlist, new
            change = diff(old, new)
            gone = removed_scripts(old, new) if self.enforced else frozenset()
            if self.spread is not None:  # each answer is noted as it comes (note_remote_drain)
                draining = sum((await self.spread(new, gone)).values())
            else:
                draining = self._drain(gone)
            self.metrics.allowlist_reloads.labels("ok").inc()
            self.metrics.allowlist_entries.set(len(new))
            result = ReloadResult(len(new), len(change.added), len(change.removed), len(change.changed), draining,
                                  new.digest)
            payload: dict[str, Any] = {
                "source": source, "file": path, **result.as_dict(),
                "added_addresses": [lic.address for lic in change.added][:MAX_ADDRESSES_IN_AUDIT],
                "removed_addresses": [lic.address for lic in change.removed][:MAX_ADDRESSES_IN_AUDIT],
                "changed_addresses": [lic.address for lic in change.changed][:MAX_ADDRESSES_IN_AUDIT],
            }
            log.info("allowlist_reloaded", source=source, **result.as_dict())
            await self._audit("allowlist_reloaded", payload)
            if draining:
                await self._audit("allowlist_drain", {"sessions": draining, "rate_per_second": self.config.drain_rate,
                                                      "addresses": payload["removed_addresses"]})
            if self.spread is not None and draining and not self._remote_draining:
                # Every front-end finished its share before this reload's own entries were written.
                closed, self._remote_closed = self._remote_closed, 0
                log.info("allowlist_drain_done", closed=closed)
                await self._audit("allowlist_drain_done", {"closed": closed})
            return result

    def apply(self, new: Allowlist, gone: frozenset[bytes]) -> int:
        """In a front-end process: the list the coordinator read (and audited) is in force here too; sessions
        of ``gone`` scripts are queued to be drained. Returns how many were queued."""
        self.allowlist = new
        self.metrics.allowlist_entries.set(len(new))
        return self._drain(gone) if self.enforced else 0

    def note_remote_drain(self, process: int, queued: int) -> None:
        """In the coordinator: front-end ``process`` answered a spread list with ``queued`` sessions to drain
        (noted as its answer arrives, before any report of that drain's end on the same link)."""
        if queued:
            self._remote_draining.add(process)

    def remote_drain_done(self, process: int, closed: int) -> None:
        """In the coordinator: front-end ``process`` closed the last of its queued sessions (or died); one
        audit entry for the whole pool when the last front-end is done."""
        if process not in self._remote_draining:
            return
        self._remote_draining.discard(process)
        self._remote_closed += closed
        # While a reload runs (answers still coming, its own entries not written) the reload writes the end.
        if not self._remote_draining and not self._lock.locked():
            closed, self._remote_closed = self._remote_closed, 0
            log.info("allowlist_drain_done", closed=closed)
            self._audit_later("allowlist_drain_done", {"closed": closed})

    def _audit_later(self, kind: str, payload: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._audit(kind, payload))
        self._audits.add(task)
        task.add_done_callback(self._audits.discard)
        task.add_done_callback(_log_failure)

    # ---- draining ------------------------------------------------------------------------------------------------

    def _drain(self, scripts: frozenset[bytes]) -> int:
        """Queue every live session mining for one of ``scripts``; the first ones close now, the rest paced."""
        server = self.server
        if not scripts or server is None:
            return 0
        queued = {id(s) for s in self._draining}
        found = [s for s in server.sessions.values()
                 if not s.finished and id(s) not in queued
                 and any(w.script in scripts for w in s.protocol.workers.values())]
        self._draining.extend(found)
        self._drain_active = self._drain_active or bool(found)
        self.tick()
        return len(found)

    def tick(self) -> None:
        """Close as many queued sessions as the pace allows (called now and by the server's housekeeping)."""
        server = self.server
        if server is None or not self._draining:
            return
        now = time.monotonic()
        while self._draining:
            session = self._draining[0]
            if session.finished or any(self.may_mine(w) for w in session.protocol.workers.values()):
                self._draining.popleft()  # gone already, or licensed again by a later reload: no token spent
                continue
            if not self._drain_pace.take(now):
                break
            self._draining.popleft()
            server.close_with_message(session, "unlicensed", DRAIN_MESSAGE)
            self._drained += 1
            self.metrics.allowlist_drained.inc()
        if not self._draining and self._drain_active:
            self._drain_active = False
            closed, self._drained = self._drained, 0
            if self.on_drain_done is not None:
                self.on_drain_done(closed)
                return
            log.info("allowlist_drain_done", closed=closed)
            self._audit_later("allowlist_drain_done", {"closed": closed})

    @property
    def draining(self) -> int:
        return len(self._draining)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("allowlist_audit_failed", error=str(task.exception()))
